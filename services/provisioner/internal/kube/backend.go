// Package kube is the provisioner's kubernetes backend: it deploys a run's
// system under test into a namespace of its own with server-side apply,
// waits for it to be ready, reports its pods as measurement targets, and
// deletes the namespace at teardown. Everything it knows about a run is read
// back from the cluster (labels and annotations), so a restarted provisioner
// carries on where the last one stopped.
package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Backend deploys runs on one cluster; safe for concurrent use.
type Backend struct {
	cfg    Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	logger *zap.Logger
	now    func() time.Time

	onCrash  CrashFunc
	mu       sync.Mutex
	watching map[string]context.CancelFunc // run → its crash watch
	watchers sync.WaitGroup
	closed   bool
	platform string
}

// SetPlatform sets the installation id put on every run namespace.
func (b *Backend) SetPlatform(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.platform = id
}

func (b *Backend) platformID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.platform
}

// Key is the record of a kubernetes run.
func (b *Backend) Key(runID string) string { return state.KubeKey(runID) }

// Owns reports whether this backend can remove the run of rec: every
// kubernetes run (the cluster is shared).
func (b *Backend) Owns(rec state.Record) bool { return rec.Backend == "kubernetes" }

// TeardownBound is the longest one Remove may take.
func (b *Backend) TeardownBound() time.Duration { return b.cfg.TeardownTimeout + 30*time.Second }

// Remove deletes the run's namespace (see Teardown).
func (b *Backend) Remove(ctx context.Context, runID string, _ *state.Entry) (bool, string, error) {
	return b.Teardown(ctx, runID)
}

// CrashFunc is told about a run whose pods restarted or failed during the
// run. kafka names the run's topics as recorded at provision (nil if
// unknown).
type CrashFunc func(experimentID, runID, reason string, kafka *events.Kafka)

// OnCrash sets the crash handler; call it before the first provision.
func (b *Backend) OnCrash(fn CrashFunc) { b.onCrash = fn }

// New builds the backend for the cluster rc points at; no I/O.
func New(rc *rest.Config, cfg Config, logger *zap.Logger) (*Backend, error) {
	cfg.defaults()
	if cfg.StrimziKafka != "" {
		if ns, name, ok := strings.Cut(cfg.StrimziKafka, "/"); !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("kubernetes backend: strimzi kafka %q: expected namespace/name of the Kafka resource", cfg.StrimziKafka)
		}
	}
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = cfg.FieldManager
	}
	if rc.Timeout == 0 {
		rc.Timeout = cfg.RequestTimeout // an API server that hangs is retried like one that is down
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	return &Backend{cfg: cfg, cs: cs, dyn: dyn, mapper: mapper, logger: logger.With(zap.String("component", "kubernetes-backend")), now: time.Now,
		watching: map[string]context.CancelFunc{}}, nil
}

// Close stops every crash watch and waits for them, so that a crash being
// reported is published before the service stops; the runs stay deployed.
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	for id, cancel := range b.watching {
		cancel()
		delete(b.watching, id)
	}
	b.mu.Unlock()
	b.watchers.Wait()
}
