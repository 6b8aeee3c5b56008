// Command images builds GreenFlow's service images as OCI image-layout
// tarballs, without a Docker daemon or a registry: `make images` runs it.
//
// An image is what ko makes of a Go main package (the same library,
// go-containerregistry, and the same layout): the statically linked binary
// at /ko-app/<name> as the entrypoint, run as the non-root user 65532, on a
// base image. The base is either a registry image pinned by digest (-base
// name@sha256:…, pulled when a registry is reachable — the one in .ko.yaml,
// which skaffold's ko builder uses for pushes) or, by default, none: a
// single layer with what a static Go binary needs (a passwd entry for the
// non-root user, its home, /tmp and the build machine's CA bundle), so the
// image builds here, where no registry can be reached, and has nothing in
// it to patch but the binary. Timestamps are fixed (the commit's time), so
// the same commit builds the same layers.
//
// The tarballs load with `ctr -n k8s.io images import` (k3s, containerd),
// `podman load` or `skopeo copy oci-archive:…`; -repo names them.
//
//	go run ./hack/images -out .cache/images [-repo greenflow] [-base REF] [service ...]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRoot is the user and group every image runs as (ko's and distroless'
// "nonroot"); the manifests' securityContext says runAsUser: 65532 too.
const NonRoot = 65532

// Services are the images built when none is named: every binary the
// cluster deployment runs.
var Services = []string{"scheduler", "provisioner", "load-generator", "energy-collector", "analyzer", "console", "uc3-processor", "greenflow"}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	out := fs.String("out", ".cache/images", "directory the tarballs are written to")
	repo := fs.String("repo", "greenflow", "image repository prefix: <repo>/<service>:<tag>")
	tag := fs.String("tag", "dev", "image tag")
	base := fs.String("base", "", "base image pinned by digest (name@sha256:…), pulled from its registry; empty: no base image")
	ldflags := fs.String("ldflags", "", "go build -ldflags (the Makefile passes the version and commit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	services := fs.Args()
	if len(services) == 0 {
		services = Services
	}
	o := Options{Repo: *repo, Tag: *tag, Base: *base, LDFlags: *ldflags}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, svc := range services {
		start := time.Now()
		path, ref, err := Build(ctx, svc, *out, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-18s %s  %s  (%.1fs)\n", svc, ref, path, time.Since(start).Seconds())
	}
	return nil
}

// Options say how Build makes an image.
type Options struct {
	Repo, Tag string
	// Base is a registry image pinned by digest; empty builds on no base.
	Base    string
	LDFlags string
	// Binary is the service's linux/amd64 static binary, already built;
	// empty: Build compiles it.
	Binary string
	// Created stamps the image and its files; zero: the commit's time.
	Created time.Time
}

// Build compiles ./services/<svc> for linux/amd64 (static, -trimpath) and
// writes <out>/<svc>.tar, an OCI image layout holding the image tagged
// <repo>/<svc>:<tag>. It returns the tarball's path and the reference.
func Build(ctx context.Context, svc, out string, o Options) (string, string, error) {
	if o.Created.IsZero() {
		o.Created = commitTime()
	}
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", o.Repo, svc, o.Tag), name.WeakValidation)
	if err != nil {
		return "", "", fmt.Errorf("image name for %s: %w", svc, err)
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = Compile(ctx, svc, o.LDFlags); err != nil {
			return "", "", err
		}
		defer os.RemoveAll(filepath.Dir(bin))
	}
	img, err := baseImage(o)
	if err != nil {
		return "", "", err
	}
	app, err := binaryLayer(bin, svc, o.Created)
	if err != nil {
		return "", "", err
	}
	if img, err = mutate.AppendLayers(img, app); err != nil {
		return "", "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", "", err
	}
	cfg := cf.Config
	cfg.Entrypoint = []string{"/ko-app/" + svc}
	cfg.Cmd = nil
	cfg.User = fmt.Sprintf("%d:%d", NonRoot, NonRoot)
	cfg.WorkingDir = "/home/nonroot"
	cfg.Env = setEnv(cfg.Env, "PATH=/ko-app:/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		"HOME=/home/nonroot", "KO_DATA_PATH=/var/run/ko")
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels["org.opencontainers.image.title"] = svc
	cfg.Labels["org.opencontainers.image.source"] = "https://github.com/greenflow/greenflow"
	cfg.Labels["org.opencontainers.image.base.name"] = baseName(o.Base)
	if img, err = mutate.Config(img, cfg); err != nil {
		return "", "", err
	}
	if img, err = mutate.CreatedAt(img, v1.Time{Time: o.Created}); err != nil {
		return "", "", err
	}
	path := filepath.Join(out, svc+".tar")
	if err := writeLayoutTar(path, ref, img); err != nil {
		return "", "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, ref.String(), nil
}

func baseName(base string) string {
	if base == "" {
		return "none (a single layer: passwd, home, /tmp, CA bundle)"
	}
	return base
}

// baseImage is the pinned registry base, or an OCI image with only the
// files a static Go binary needs.
func baseImage(o Options) (v1.Image, error) {
	if o.Base != "" {
		d, err := name.NewDigest(o.Base)
		if err != nil {
			return nil, fmt.Errorf("-base %q: want an image pinned by digest (name@sha256:…): %w", o.Base, err)
		}
		img, err := remote.Image(d, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
		if err != nil {
			return nil, fmt.Errorf("pull base image %s: %w", d, err)
		}
		return img, nil
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	files, err := baseFiles(o.Created)
	if err != nil {
		return nil, err
	}
	l, err := layerOf(files)
	if err != nil {
		return nil, err
	}
	img, err = mutate.AppendLayers(img, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	return mutate.ConfigFile(img, cf)
}

// entry is one file or directory of a layer.
type entry struct {
	hdr  tar.Header
	body []byte
}

func dir(path string, uid, mode int, at time.Time) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: int64(mode), Uid: uid, Gid: uid, ModTime: at}}
}

func file(path string, mode int, body []byte, at time.Time) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: int64(mode), Size: int64(len(body)), ModTime: at}, body: body}
}

// baseFiles: root and nonroot in passwd and group, the non-root home and
// /tmp, and the CA bundle (services reach TLS endpoints with public
// certificates only through it).
func baseFiles(at time.Time) ([]entry, error) {
	nr := strconv.Itoa(NonRoot)
	passwd := "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:" + nr + ":" + nr + ":nonroot:/home/nonroot:/sbin/nologin\n"
	group := "root:x:0:\nnonroot:x:" + nr + ":\n"
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read the CA bundle: %w", err)
	}
	es := []entry{
		dir("etc", 0, 0o755, at), file("etc/passwd", 0o644, []byte(passwd), at), file("etc/group", 0o644, []byte(group), at),
		dir("etc/ssl", 0, 0o755, at), dir("etc/ssl/certs", 0, 0o755, at),
		dir("home", 0, 0o755, at), dir("home/nonroot", NonRoot, 0o700, at),
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: at}},
	}
	if ca != nil {
		es = append(es, file("etc/ssl/certs/ca-certificates.crt", 0o644, ca, at))
	}
	return es, nil
}

func binaryLayer(bin, svc string, at time.Time) (v1.Layer, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	return layerOf([]entry{dir("ko-app", 0, 0o755, at), file("ko-app/"+svc, 0o755, b, at)})
}

// layerOf tars the entries (root-owned unless said, in order) into an
// OCI layer.
func layerOf(es []entry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// Compile builds the service's static linux/amd64 binary into a temp dir
// of its own (the caller removes it).
func Compile(ctx context.Context, svc, ldflags string) (string, error) {
	tmp, err := os.MkdirTemp("", "greenflow-image-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(tmp, svc)
	args := []string{"build", "-trimpath", "-o", bin}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./services/"+svc)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("go build ./services/%s: %w\n%s", svc, err, b)
	}
	return bin, nil
}

// writeLayoutTar writes an OCI image layout holding img (annotated with its
// reference, as containerd and skopeo read it) and tars it to path.
func writeLayoutTar(path string, ref name.Tag, img v1.Image) error {
	dir, err := os.MkdirTemp("", "greenflow-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.String(), // containerd's import takes the name from here
		"io.containerd.image.name":          ref.String(),
	})); err != nil {
		return err
	}
	tmp := path + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = time.Unix(0, 0), 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func setEnv(env []string, kv ...string) []string {
	for _, s := range kv {
		k := s[:strings.IndexByte(s, '=')+1]
		replaced := false
		for i, e := range env {
			if strings.HasPrefix(e, k) {
				env[i], replaced = s, true
			}
		}
		if !replaced {
			env = append(env, s)
		}
	}
	return env
}

// commitTime is HEAD's commit time (reproducible layers), else the epoch.
func commitTime() time.Time {
	out, err := exec.Command("git", "-C", repoRoot(), "log", "-1", "--format=%ct").Output()
	if err == nil {
		if s, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(s, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

// repoRoot is the module root: the nearest directory above the working
// directory holding go.mod.
func repoRoot() string {
	d, err := os.Getwd()
	if err != nil {
		return "."
	}
	for p := d; ; p = filepath.Dir(p) {
		if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
			return p
		}
		if filepath.Dir(p) == p {
			return d
		}
	}
}
