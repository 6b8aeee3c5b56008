package main

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/stretchr/testify/require"
)

// TestSchedulerImage builds the scheduler's image as an OCI tarball on this
// machine — no Docker daemon, no registry — and checks it as a runtime
// would: the layout opens, the reference is annotated, the entrypoint is the
// binary, the user is not root, nothing outside the user's home and /tmp is
// writable by it, and the binary inside runs (--version) and names its
// commit.
func TestSchedulerImage(t *testing.T) {
	out := t.TempDir()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ldflags := "-X github.com/greenflow/greenflow/pkg/version.commit=0123456789abcdef0123456789abcdef01234567"
	bin, err := Compile(context.Background(), "scheduler", ldflags)
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(bin)) })
	path, ref, err := Build(context.Background(), "scheduler", out, Options{Repo: "example.test/greenflow", Tag: "t1", Binary: bin, Created: at})
	require.NoError(t, err)
	require.Equal(t, "example.test/greenflow/scheduler:t1", ref)

	img, annotations := openTarball(t, path)
	require.Equal(t, ref, annotations["org.opencontainers.image.ref.name"])
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, []string{"/ko-app/scheduler"}, cf.Config.Entrypoint)
	require.Equal(t, "65532:65532", cf.Config.User, "runs as the non-root user")
	require.Equal(t, "linux", cf.OS)
	require.Equal(t, "amd64", cf.Architecture)
	require.True(t, cf.Created.Time.Equal(at), "created at the commit's time, not now: %v", cf.Created)

	// The files as a container sees them (layers flattened).
	files := map[string]*tar.Header{}
	var binary []byte
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		files[strings.TrimSuffix(h.Name, "/")] = h
		if h.Name == "ko-app/scheduler" {
			binary, err = io.ReadAll(tr)
			require.NoError(t, err)
		}
	}
	require.Contains(t, files, "etc/passwd")
	for name, h := range files {
		writableByUser := h.Uid == NonRoot || h.Mode&0o002 != 0
		if writableByUser {
			require.Contains(t, []string{"home/nonroot", "tmp"}, name, "only the home and /tmp are the user's to write")
		}
		require.False(t, h.ModTime.After(at), "%s stamped %v, after the commit", name, h.ModTime)
	}
	require.Equal(t, int64(0o755), files["ko-app/scheduler"].Mode&0o777)
	require.NotEmpty(t, binary)

	exe := filepath.Join(t.TempDir(), "scheduler")
	require.NoError(t, os.WriteFile(exe, binary, 0o755))
	got, err := exec.Command(exe, "--version").CombinedOutput()
	require.NoError(t, err, "%s", got)
	require.Regexp(t, `^scheduler \S+ \(commit 0123456789abcdef0123456789abcdef01234567\)\n$`, string(got))

	// The same binary and commit make the same image (the compile is
	// reproducible with -trimpath; compiling twice would only cost time).
	path2, _, err := Build(context.Background(), "scheduler", t.TempDir(), Options{Repo: "example.test/greenflow", Tag: "t1", Binary: bin, Created: at})
	require.NoError(t, err)
	img2, _ := openTarball(t, path2)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := img2.Digest()
	require.NoError(t, err)
	require.Equal(t, d1, d2, "two builds of one commit differ")
}

// openTarball untars an OCI layout tarball and returns its one image and
// that image's annotations.
func openTarball(t *testing.T, path string) (v1.Image, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			require.NoError(t, os.MkdirAll(target, 0o755))
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(target, b, 0o644))
	}
	p, err := layout.FromPath(dir)
	require.NoError(t, err)
	idx, err := p.ImageIndex()
	require.NoError(t, err)
	m, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, m.Manifests, 1)
	img, err := idx.Image(m.Manifests[0].Digest)
	require.NoError(t, err)
	return img, m.Manifests[0].Annotations
}
