package testbed

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A freshly installed k3s has neither Strimzi's operator (the overlay's
// Kafka is a Strimzi Kafka, and `cluster up` refuses a cluster without its
// kinds) nor GreenFlow's images (built by `make images` as OCI tarballs,
// not in any registry the nodes reach). up installs the one and imports
// the other over SSH before deploying, as the README's by-hand steps do.

// StrimziInstallURL is Strimzi's install manifest for namespace kafka, the
// README's documented way.
const StrimziInstallURL = "https://strimzi.io/install/latest?namespace=kafka"

// strimziCRDs are the kinds the overlay uses.
var strimziCRDs = []string{"crd/kafkas.kafka.strimzi.io", "crd/kafkanodepools.kafka.strimzi.io", "crd/kafkatopics.kafka.strimzi.io"}

// sudo is the prefix of a command that needs root on s's nodes.
func (s Spec) sudo() string {
	if s.SSH.User != "root" && s.SSH.Sudo != "" {
		return s.SSH.Sudo + " "
	}
	return ""
}

// StrimziPlan is the commands installing Strimzi's operator on the control
// node: the kafka namespace (its manifest on stdin), the install manifest,
// then waits for its CRDs and its Deployment.
func StrimziPlan(s Spec, control string) []Step {
	k := s.sudo() + "k3s kubectl "
	return []Step{
		{Host: control, Cmd: k + "apply -f -", Stdin: "apiVersion: v1\nkind: Namespace\nmetadata: {name: kafka}\n", Why: "Strimzi's namespace"},
		{Host: control, Cmd: k + "create -n kafka -f '" + StrimziInstallURL + "'", Why: "Strimzi's operator"},
		{Host: control, Cmd: k + "wait --for=condition=Established --timeout=5m " + strings.Join(strimziCRDs, " "), Why: "Strimzi's CRDs"},
		{Host: control, Cmd: k + "-n kafka rollout status deployment/strimzi-cluster-operator --timeout=10m", Why: "Strimzi's operator ready"},
	}
}

// InstallStrimzi runs StrimziPlan on r's control node.
func InstallStrimzi(ctx context.Context, run Runner, r Reservation) error {
	for _, st := range StrimziPlan(r.Spec, r.Hosts(RoleControl)[0]) {
		if _, err := run.Run(ctx, st.Host, st.Cmd, st.Stdin); err != nil {
			return fmt.Errorf("install Strimzi (%s): %w", st.Why, err)
		}
	}
	return nil
}

// Image is one OCI image-layout tarball of `make images` and the
// reference it carries (its index's io.containerd.image.name, what
// containerd names it on import).
type Image struct {
	File string
	Ref  string
	Size int64
}

// Repository is the image's name without its tag: what a manifest's
// image field names before the testbed pins the tag.
func (i Image) Repository() string { return repository(i.Ref) }

func repository(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return strings.TrimPrefix(ref, "docker.io/")
}

// ReadImages lists dir's tarballs (*.tar) with the reference each holds.
// A tarball without one is refused: containerd would import it nameless.
func ReadImages(dir string) ([]Image, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("images %s: no *.tar (make images writes .cache/images/<service>.tar)", dir)
	}
	sort.Strings(files)
	out := make([]Image, 0, len(files))
	for _, f := range files {
		img, err := readImage(f)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

func readImage(path string) (Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Image{}, err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return Image{}, fmt.Errorf("image %s: no index.json: expected an OCI image layout tarball (make images)", path)
		}
		if err != nil {
			return Image{}, fmt.Errorf("image %s: %w", path, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return Image{}, fmt.Errorf("image %s: index.json: %w", path, err)
		}
		for _, m := range idx.Manifests {
			for _, k := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
				if ref := m.Annotations[k]; strings.Contains(ref, "/") {
					return Image{File: path, Ref: ref, Size: fi.Size()}, nil
				}
			}
		}
		return Image{}, fmt.Errorf("image %s: index.json names no image (annotation io.containerd.image.name): containerd would import it nameless", path)
	}
}

// ImportCommand loads an image tarball read from standard input into the
// containerd of k3s, in the namespace the kubelet uses.
func ImportCommand(s Spec) string { return s.sudo() + "k3s ctr -n k8s.io images import -" }

// StreamRunner runs a command whose standard input is a stream (an image
// tarball, too big for a string).
type StreamRunner interface {
	RunStream(ctx context.Context, host, cmd string, stdin io.Reader) (string, error)
}

// ImportImages streams every image to every node of r into k3s's
// containerd, the pods then finding them there (UseImages pins the
// manifests to them).
func ImportImages(ctx context.Context, run Runner, r Reservation, images []Image, progress func(string)) error {
	sr, ok := run.(StreamRunner)
	if !ok {
		return errors.New("import images: the runner cannot stream a file to a command")
	}
	for _, n := range r.Nodes {
		for _, img := range images {
			if progress != nil {
				progress(fmt.Sprintf("importing %s (%s, %d MB) on %s", img.Ref, filepath.Base(img.File), img.Size>>20, n.Host))
			}
			f, err := os.Open(img.File)
			if err != nil {
				return fmt.Errorf("import image %s: %w", img.Ref, err)
			}
			_, err = sr.RunStream(ctx, n.Host, ImportCommand(r.Spec), f)
			_ = f.Close()
			if err != nil {
				return fmt.Errorf("import image %s on %s: %w", img.Ref, n.Host, err)
			}
		}
	}
	return nil
}

// UseImages points every container whose image is one of images'
// repositories (greenflow/scheduler, untagged in the manifests) at the
// imported reference, with imagePullPolicy IfNotPresent: the node has it,
// and no registry does.
func UseImages(images []Image, objs []*unstructured.Unstructured) error {
	refs := map[string]string{}
	for _, img := range images {
		refs[img.Repository()] = img.Ref
	}
	for _, u := range objs {
		var podSpec []string
		switch u.GetKind() {
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
			podSpec = []string{"spec", "template", "spec"}
		default:
			continue
		}
		for _, field := range []string{"initContainers", "containers"} {
			// In place: rendered from YAML, the objects hold ints, which
			// unstructured's copying accessors refuse.
			v, _, _ := unstructured.NestedFieldNoCopy(u.Object, append(podSpec, field)...)
			cs, _ := v.([]any)
			for _, c := range cs {
				c, ok := c.(map[string]any)
				if !ok {
					return fmt.Errorf("use the imported images in %s %s/%s: %s: expected objects", u.GetKind(), u.GetNamespace(), u.GetName(), field)
				}
				image, _ := c["image"].(string)
				if ref, ok := refs[repository(image)]; ok {
					c["image"], c["imagePullPolicy"] = ref, "IfNotPresent"
				}
			}
		}
	}
	return nil
}
