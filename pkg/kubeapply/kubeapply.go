// Package kubeapply applies Kubernetes objects server-side: what `greenflow
// cluster up` and the tests that check manifests against a real API server
// share. Its Clients and Mapper (discovery that looks again for a kind it
// does not know) serve the provisioner's Kubernetes backend too.
package kubeapply

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Clients are the clients of one cluster that apply and read arbitrary
// kinds: the typed client, the dynamic one and a Mapper over the typed
// client's discovery.
type Clients struct {
	Typed   kubernetes.Interface
	Dynamic dynamic.Interface
	Mapper  *Mapper
}

// NewClients builds the clients of rc's cluster; no I/O.
func NewClients(rc *rest.Config) (Clients, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return Clients{}, fmt.Errorf("dynamic client: %w", err)
	}
	return Clients{Typed: cs, Dynamic: dyn, Mapper: NewMapper(cs.Discovery())}, nil
}

// Mapper maps kinds to resources from the API server's discovery, cached.
// A kind the cache does not know is looked up again once, as a CRD may have
// been installed since discovery was cached. Safe for concurrent use.
type Mapper struct {
	m *restmapper.DeferredDiscoveryRESTMapper
}

// NewMapper maps kinds through d; no I/O until the first Mapping.
func NewMapper(d discovery.DiscoveryInterface) *Mapper {
	return &Mapper{restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(d))}
}

// Mapping is gvk's resource; for a kind the API server does not serve,
// an error meta.IsNoMatchError recognises.
func (m *Mapper) Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	r, err := m.m.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		m.m.Reset()
		r, err = m.m.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return r, err
}

// Reset drops the cached discovery, for a caller that saw discovery fail.
func (m *Mapper) Reset() { m.m.Reset() }

// Applier applies objects server-side, as `kubectl apply --server-side`
// does: the API server checks every field against its schema, so a wrong
// field, type or API version is an error naming it.
type Applier struct {
	dyn     dynamic.Interface
	mapper  *Mapper
	manager string
}

// NewApplier acts as rc's user and owns what it applies as fieldManager.
func NewApplier(rc *rest.Config, fieldManager string) (*Applier, error) {
	c, err := NewClients(rc)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: c.Dynamic, mapper: c.Mapper, manager: fieldManager}, nil
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
	m, err := a.mapper.Mapping(u.GroupVersionKind())
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
	_, err := a.mapper.Mapping(u.GroupVersionKind())
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
