// Package kube is the provisioner's kubernetes backend: it deploys a run's
// system under test into a namespace of its own with server-side apply,
// waits for it to be ready, reports its pods as measurement targets, and
// deletes the namespace at teardown. Everything it knows about a run is read
// back from the cluster (labels and annotations), so a restarted provisioner
// carries on where the last one stopped.
package kube

import (
	"cmp"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/kubeapply"
	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Deps are the backend's collaborators.
type Deps struct {
	// REST is the cluster's client configuration (see RESTConfig); required.
	REST   *rest.Config
	Logger *zap.Logger
	// Clock times deadlines and polls (default: the real clock).
	Clock clock.Clock
}

// Backend deploys runs on one cluster; safe for concurrent use.
type Backend struct {
	cfg     Config
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	mapper  *kubeapply.Mapper
	logger  *zap.Logger
	clock   clock.Clock
	watches poll.Watches[struct{}]
	// lastOutage is when a call last found the API server unavailable
	// (unix ms on clock); see transient.
	lastOutage atomic.Int64

	mu       sync.Mutex
	platform string
}

// New builds the backend for the cluster d.REST points at; no I/O.
func New(cfg Config, d Deps) (*Backend, error) {
	err := cfg.Validate()
	if d.REST == nil {
		err = errors.Join(err, errors.New("kubernetes backend: no cluster configuration (Deps.REST)"))
	}
	if err != nil {
		return nil, err
	}
	d.Logger, d.Clock = cmp.Or(d.Logger, zap.NewNop()), cmp.Or[clock.Clock](d.Clock, clock.RealClock{})
	rc := rest.CopyConfig(d.REST)
	if rc.UserAgent == "" {
		rc.UserAgent = cfg.FieldManager
	}
	if rc.Timeout == 0 {
		rc.Timeout = cfg.RequestTimeout // an API server that hangs is retried like one that is down
	}
	logger := d.Logger.With(zap.String("component", "kubernetes-backend"))
	// The API server's warnings (a run's pods that would not pass Pod
	// Security "restricted", deprecated APIs in a manifest) go to the
	// service's log, not client-go's stderr.
	rc.WarningHandler = apiWarnings{logger}
	c, err := kubeapply.NewClients(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	return &Backend{cfg: cfg, cs: c.Typed, dyn: c.Dynamic, mapper: c.Mapper, logger: logger, clock: d.Clock}, nil
}

// apiWarnings logs the API server's warnings.
type apiWarnings struct{ logger *zap.Logger }

func (w apiWarnings) HandleWarningHeader(_ int, _ string, text string) {
	w.logger.Info("kubernetes API warning", zap.String("warning", text))
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

// Close stops every crash watch and waits for them, so that a crash being
// reported is published before the service stops; the runs stay deployed.
func (b *Backend) Close() { b.watches.Close() }
