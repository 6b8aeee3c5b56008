package cluster

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/greenflow/greenflow/deploy"
)

// Overlays are the overlays shipped in deploy/overlays.
var Overlays = []string{"single-node", "testbed"}

// Render builds an overlay — one of Overlays (the manifests this binary was
// built with) or a kustomization directory on disk — as `kubectl
// kustomize` does (kustomize's library, in process), with the provisioner's
// egress to the Kubernetes API narrowed to apiCIDRs (the one line an
// operator would otherwise edit), and the first egress rule of each
// NetworkPolicy named in egress given those CIDRs (the testbed overlay's
// collectors' way to the Grid'5000 API, which `testbed up` resolves). It
// returns the objects in the order kustomize gives them.
func Render(overlay string, apiCIDRs []string, egress map[string][]string) ([]*unstructured.Unstructured, error) {
	var fsys filesys.FileSystem
	var top, target string
	if isShipped(overlay) {
		fsys, top, target = filesys.MakeFsInMemory(), "/top", "../deploy/overlays/"+overlay
		if err := copyEmbedded(fsys); err != nil {
			return nil, err
		}
	} else {
		abs, err := filepath.Abs(overlay)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(abs, "kustomization.yaml")); err != nil {
			return nil, fmt.Errorf("overlay %q: neither one of %s nor a directory with a kustomization.yaml", overlay, strings.Join(Overlays, ", "))
		}
		// The wrapper lives on disk beside nothing; kustomize takes
		// relative paths only, so it names the overlay relative to itself.
		tmp, err := os.MkdirTemp("", "greenflow-cluster-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		rel, err := filepath.Rel(tmp, abs)
		if err != nil {
			return nil, err
		}
		fsys, top, target = filesys.MakeFsOnDisk(), tmp, filepath.ToSlash(rel)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [" + fmt.Sprintf("%q", target) + "]\n"
	policies := map[string][]string{}
	for name, cidrs := range egress {
		if len(cidrs) > 0 {
			policies[name] = cidrs
		}
	}
	if len(apiCIDRs) > 0 {
		policies["greenflow-provisioner-kube-api"] = apiCIDRs
	}
	if len(policies) > 0 {
		k += "patches:\n"
	}
	for _, name := range slices.Sorted(maps.Keys(policies)) {
		var to []string
		for _, c := range policies[name] {
			to = append(to, fmt.Sprintf("{ipBlock: {cidr: %q}}", c))
		}
		k += fmt.Sprintf("  - target: {kind: NetworkPolicy, name: %s}\n    patch: |-\n", name) +
			"      - {op: replace, path: /spec/egress/0/to, value: [" + strings.Join(to, ", ") + "]}\n"
	}
	if err := fsys.MkdirAll(top); err != nil {
		return nil, err
	}
	if err := fsys.WriteFile(path.Join(top, "kustomization.yaml"), []byte(k)); err != nil {
		return nil, err
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, top)
	if err != nil {
		hint := ""
		if !isShipped(overlay) {
			hint = " (an overlay directory of your own reads the base from disk: keep it in a clone, e.g. deploy/overlays/<yours>, or point its resources at a clone's deploy/base)"
		}
		return nil, fmt.Errorf("kustomize build %s: %w%s", overlay, err, hint)
	}
	var out []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

func isShipped(overlay string) bool {
	for _, o := range Overlays {
		if o == overlay {
			return true
		}
	}
	return false
}

// copyEmbedded writes deploy.FS under /deploy.
func copyEmbedded(fsys filesys.FileSystem) error {
	return fs.WalkDir(deploy.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := path.Join("/deploy", p)
		if d.IsDir() {
			return fsys.MkdirAll(dst)
		}
		b, err := deploy.FS.ReadFile(p)
		if err != nil {
			return err
		}
		return fsys.WriteFile(dst, b)
	})
}

// toUnstructured converts a typed object (a Secret) for the applier.
func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	b, err := yaml.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		return nil, err
	}
	return u, nil
}
