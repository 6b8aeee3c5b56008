package collector

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Readiness conditions (see Check).
const condBucket = "kv_bucket"

// readiness holds the conditions that keep the collector from working;
// safe for concurrent use.
type readiness struct {
	mu    sync.Mutex
	conds map[string]error
}

func newReadiness() *readiness {
	return &readiness{conds: map[string]error{
		condBucket: errors.New("kv bucket not opened yet"),
	}}
}

func (r *readiness) set(cond string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.conds, cond)
		return
	}
	r.conds[cond] = err
}

func (r *readiness) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.conds))
	for k := range r.conds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	errs := make([]error, len(keys))
	for i, k := range keys {
		errs[i] = fmt.Errorf("%s: %w", k, r.conds[k])
	}
	return errors.Join(errs...)
}

// SourceHealth is one source's state as last sampled.
type SourceHealth struct {
	Healthy bool
	Reason  string // why not, when not
}

type healthTracker struct {
	mu    sync.Mutex
	state map[string]SourceHealth
	gauge *prometheus.GaugeVec
}

func newHealthTracker() *healthTracker {
	return &healthTracker{state: map[string]SourceHealth{}, gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricSourceHealthy,
		Help: "1 when the source's last reading succeeded, 0 when it failed (the reason is logged).",
	}, []string{"source"})}
}

func (h *healthTracker) set(id string, ok bool, reason string) {
	h.mu.Lock()
	h.state[id] = SourceHealth{Healthy: ok, Reason: reason}
	h.mu.Unlock()
	h.gauge.WithLabelValues(id).Set(boolGauge(ok))
}

func (h *healthTracker) snapshot() map[string]SourceHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]SourceHealth, len(h.state))
	for k, v := range h.state {
		out[k] = v
	}
	return out
}
