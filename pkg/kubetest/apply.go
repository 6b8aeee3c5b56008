package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/greenflow/greenflow/pkg/kubeapply"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Applier applies manifests server-side (pkg/kubeapply's, which `greenflow
// cluster up` uses too).
type Applier = kubeapply.Applier

// NewApplier is an Applier acting as rc's user.
func NewApplier(rc *rest.Config) (*Applier, error) { return kubeapply.NewApplier(rc, "greenflow-test") }

// Decode splits YAML documents into objects, skipping empty ones; source
// names them in errors.
func Decode(raw []byte, source string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
}

// CRDResource is the resource of CustomResourceDefinitions.
var CRDResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// CRDEstablished reports whether the API server serves the CRD named name
// (its Established condition); an error reads as not yet.
func CRDEstablished(ctx context.Context, dyn dynamic.Interface, name string) bool {
	got, err := dyn.Resource(CRDResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
	for _, c := range conds {
		if cm, ok := c.(map[string]any); ok && cm["type"] == "Established" && cm["status"] == "True" {
			return true
		}
	}
	return false
}

// InstallCRDs applies the CRDs of the files of fsys that match pattern (the
// vendored ones: deploy.FS, "crds/strimzi/*.yaml") and waits, up to 30 s,
// until the API server serves them — what installing their operator does
// first. It returns their names.
func InstallCRDs(ctx context.Context, rc *rest.Config, fsys fs.FS, pattern string) ([]string, error) {
	files, err := fs.Glob(fsys, pattern)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("install CRDs: no file matches %s", pattern)
	}
	a, err := NewApplier(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, f := range files {
		raw, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		objs, err := Decode(raw, f)
		if err != nil {
			return nil, err
		}
		if err := a.Apply(ctx, objs); err != nil {
			return nil, fmt.Errorf("install CRDs of %s: %w", f, err)
		}
		for _, o := range objs {
			names = append(names, o.GetName())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for !CRDEstablished(ctx, dyn, name) {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("install CRDs: %s not established within 30s", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return names, nil
}
