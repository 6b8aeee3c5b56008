// Package kubeapply applies Kubernetes objects server-side: what `greenflow
// cluster up` and the tests that check manifests against a real API server
// share.
package kubeapply

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Applier applies objects server-side, as `kubectl apply --server-side`
// does: the API server checks every field against its schema, so a wrong
// field, type or API version is an error naming it.
type Applier struct {
	dyn     dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	manager string
}

// NewApplier acts as rc's user and owns what it applies as fieldManager.
func NewApplier(rc *rest.Config, fieldManager string) (*Applier, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery())), manager: fieldManager}, nil
}

// Apply applies each object in order; an error names the object.
func (a *Applier) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, u := range objs {
		ri, err := a.Resource(u)
		if err != nil {
			return err
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: a.manager, Force: true}); err != nil {
			return fmt.Errorf("apply %s: %w", Describe(u), err)
		}
	}
	return nil
}

// Resource is the client of u's resource (in its namespace, "default" when
// a namespaced object names none); a kind the API server does not serve is
// an error wrapping meta's no-match error.
func (a *Applier) Resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset() // a CRD applied since discovery was cached
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Describe(u), err)
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource), nil
	}
	ns := u.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	return a.dyn.Resource(m.Resource).Namespace(ns), nil
}

// Served reports whether the API server serves u's kind (asking discovery
// again before it says no: a CRD may have been installed since).
func (a *Applier) Served(u *unstructured.Unstructured) (bool, error) {
	gvk := u.GroupVersionKind()
	_, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		_, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// Describe names an object as errors do: Kind namespace/name.
func Describe(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}
