package console

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/service"
)

// liveRun is what a viewer sees of one run, as the SSE "run" event.
type liveRun struct {
	RunID      string `json:"run_id"`
	Index      int    `json:"index"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	PhaseEndMs int64  `json:"phase_end_ms,omitempty"`
	// RecordsSent is the load generators' acknowledged records (sum over
	// instances); RatePerSec their rate over the last second.
	RecordsSent int64   `json:"records_sent"`
	RatePerSec  float64 `json:"rate_per_sec"`
	// Offered is the commanded rate (load.start), or the load generators'
	// stored account of it; Delivered (acknowledged by Kafka) and Lag are
	// the latest per-second figures in ClickHouse; nil when none yet.
	Offered   *float64 `json:"offered_per_sec,omitempty"`
	Delivered *float64 `json:"delivered_per_sec,omitempty"`
	Lag       *float64 `json:"lag,omitempty"`
	// Power is the mean power per component (node totals, roles, other,
	// unattributed) over the last poll window; Estimated names the
	// components whose samples came from a power model.
	Power     map[string]float64 `json:"power_w,omitempty"`
	Estimated []string           `json:"estimated,omitempty"`
	Flags     []string           `json:"flags,omitempty"`
	// UJPerEvent and EnergyJ come with the run's analysis.
	UJPerEvent *float64 `json:"uj_per_event,omitempty"`
	EnergyJ    *float64 `json:"energy_j,omitempty"`
	UpdatedMs  int64    `json:"updated_ms"`

	targets   []events.Target
	instances map[string]events.LoadProgress
}

// liveExperiment is the SSE "experiment" event.
type liveExperiment struct {
	State      string `json:"state"`
	RunsTotal  int    `json:"runs_total"`
	RunsDone   int    `json:"runs_done"`
	RunsFailed int    `json:"runs_failed"`
	Reason     string `json:"reason,omitempty"`
}

// hubs holds one hub per watched experiment.
type hubs struct {
	c  *Console
	mu sync.Mutex
	m  map[string]*hub
}

func newHubs(c *Console) *hubs { return &hubs{c: c, m: map[string]*hub{}} }

// hub shares one lifecycle watch and one ClickHouse poll of an experiment
// among all its viewers. Each update is encoded once and handed to every
// viewer as the latest value of its key (a run, or the experiment): a slow
// browser skips intermediate values, it never holds up the others.
type hub struct {
	id      string
	mu      sync.Mutex
	viewers map[*viewer]struct{}
	runs    map[string]*liveRun
	exp     *liveExperiment
	last    map[string][]byte // latest encoded event per key, for newcomers
	stop    context.CancelFunc
	stopped chan struct{}
}

// viewer is one SSE stream: the latest message of each key not sent yet.
type viewer struct {
	mu      sync.Mutex
	pending map[string][]byte
	order   []string
	wake    chan struct{}
}

func (v *viewer) put(key string, msg []byte) {
	v.mu.Lock()
	if _, ok := v.pending[key]; !ok {
		v.order = append(v.order, key)
	}
	v.pending[key] = msg
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// take returns the pending messages in first-queued order.
func (v *viewer) take() [][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([][]byte, 0, len(v.order))
	for _, k := range v.order {
		out = append(out, v.pending[k])
	}
	clear(v.pending)
	v.order = v.order[:0]
	return out
}

// join adds a viewer of experiment id (its events replayed from sinceMs), starting
// the experiment's hub when it is the first; leave removes it and stops
// the hub with the last. The hub outlives the request that started it:
// it runs on base without its cancellation, until its last viewer leaves.
func (hs *hubs) join(base context.Context, id string, sinceMs int64) (*hub, *viewer) {
	v := &viewer{pending: map[string][]byte{}, wake: make(chan struct{}, 1)}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h, ok := hs.m[id]
	if !ok {
		ctx, cancel := context.WithCancel(context.WithoutCancel(base))
		h = &hub{id: id, viewers: map[*viewer]struct{}{}, runs: map[string]*liveRun{}, last: map[string][]byte{}, stop: cancel,
			stopped: make(chan struct{})}
		hs.m[id] = h
		hs.c.m.hubs.Inc()
		go h.run(ctx, hs.c, sinceMs)
	}
	h.mu.Lock()
	h.viewers[v] = struct{}{}
	keys := make([]string, 0, len(h.last))
	for k := range h.last {
		keys = append(keys, k)
	}
	sort.Strings(keys) // "experiment" before "run …"
	for _, k := range keys {
		v.put(k, h.last[k])
	}
	h.mu.Unlock()
	hs.c.m.viewers.Inc()
	return h, v
}

func (hs *hubs) leave(h *hub, v *viewer) {
	hs.c.m.viewers.Dec()
	hs.mu.Lock()
	h.mu.Lock()
	delete(h.viewers, v)
	empty := len(h.viewers) == 0
	h.mu.Unlock()
	if empty && hs.m[h.id] == h {
		delete(hs.m, h.id)
		hs.c.m.hubs.Dec()
		h.stop()
	}
	hs.mu.Unlock()
	if empty {
		<-h.stopped
	}
}

// publish encodes an SSE event once and hands it to every viewer.
func (h *hub) publish(key, event string, v any) {
	data, _ := json.Marshal(v)
	msg := []byte("event: " + event + "\ndata: " + string(data) + "\n\n")
	h.mu.Lock()
	h.last[key] = msg
	for vw := range h.viewers {
		vw.put(key, msg)
	}
	h.mu.Unlock()
}

// lifecycleTypes are the events a hub follows.
var lifecycleTypes = []events.Type{events.TypeExperimentState, events.TypeRunState, events.TypeRunProvisioned, events.TypeLoadStart,
	events.TypeLoadProgress, events.TypeRunAnalyzed}

// activeStates are the run states with load or samples worth polling.
var activeStates = []string{events.RunStateBaseline, events.RunStateWarmup, events.RunStateMeasuring, events.RunStateCooldown}

func (h *hub) run(ctx context.Context, c *Console, sinceMs int64) {
	defer close(h.stopped)
	var g service.Group
	// The watch replays the experiment's events from sinceMs (a minute
	// before: the stream's clock and the scheduler's may differ), so a hub
	// started mid-run knows its runs' targets and states.
	since := time.UnixMilli(sinceMs).Add(-time.Minute)
	g.Go("watch", func(ctx context.Context) error {
		err := c.deps.Bus.Watch(ctx, since, lifecycleTypes, func(d bus.Delivery) { h.apply(d.Msg) })
		if err != nil && ctx.Err() == nil {
			c.logger.Warn("live watch failed", zap.String("experiment_id", h.id), zap.Error(err))
		}
		<-ctx.Done()
		return nil
	})
	g.Go("poll", func(ctx context.Context) error {
		service.Every(ctx, c.clock, c.cfg.PollInterval, nil, func() { h.poll(ctx, c) })
		return nil
	})
	_ = g.Run(ctx)
}

// apply folds one lifecycle event of the experiment into the hub's state
// and publishes what changed.
func (h *hub) apply(m events.Message) {
	if exp, _ := m.IDs(); exp != h.id {
		return
	}
	switch m := m.(type) {
	case *events.ExperimentState:
		h.mu.Lock()
		h.exp = &liveExperiment{State: m.State, RunsTotal: m.RunsTotal, RunsDone: m.RunsDone, RunsFailed: m.RunsFailed, Reason: m.Reason}
		e := *h.exp
		h.mu.Unlock()
		h.publish("experiment", "experiment", e)
		return
	case *events.RunState:
		h.updateRun(m.RunID, func(r *liveRun) {
			r.Index, r.State, r.Reason, r.PhaseEndMs, r.UpdatedMs = m.Index, m.State, m.Reason, m.PhaseEndMs, m.TsMs
		})
	case *events.RunProvisioned:
		h.updateRun(m.RunID, func(r *liveRun) { r.targets = m.Targets })
	case *events.LoadStart:
		// The offered rate as the load was commanded; the load generators
		// store its per-second account only when the load ends.
		rate := m.Workload.RatePerSec
		if rate == 0 && m.Workload.PeriodMs > 0 {
			rate = float64(m.Workload.Sensors) * 1000 / float64(m.Workload.PeriodMs)
		}
		if rate > 0 {
			h.updateRun(m.RunID, func(r *liveRun) { r.Offered = &rate })
		}
	case *events.LoadProgress:
		h.updateRun(m.RunID, func(r *liveRun) {
			if r.instances == nil {
				r.instances = map[string]events.LoadProgress{}
			}
			r.instances[m.Instance] = *m
			r.RecordsSent, r.RatePerSec = 0, 0
			for _, p := range r.instances {
				r.RecordsSent += p.RecordsSent
				r.RatePerSec += p.RatePerSec
			}
			r.UpdatedMs = m.TsMs
		})
	case *events.RunAnalyzed:
		h.updateRun(m.RunID, func(r *liveRun) {
			uj, ej := m.MicroJPerEvent, m.EnergyJ
			r.UJPerEvent, r.EnergyJ = &uj, &ej
			for _, f := range m.Flags {
				if !slices.Contains(r.Flags, f) {
					r.Flags = append(r.Flags, f)
				}
			}
			if m.Estimated && !slices.Contains(r.Estimated, "energy") {
				r.Estimated = append(r.Estimated, "energy")
			}
		})
	}
}

func (h *hub) updateRun(id string, f func(*liveRun)) {
	h.mu.Lock()
	r, ok := h.runs[id]
	if !ok {
		r = &liveRun{RunID: id}
		h.runs[id] = r
	}
	f(r)
	snap := *r
	h.mu.Unlock()
	h.publish("run "+id, "run", snap)
}

// poll reads the live figures of the experiment's active runs: one
// ClickHouse round per active run per interval, whatever the viewers.
func (h *hub) poll(ctx context.Context, c *Console) {
	type job struct {
		id      string
		targets []events.Target
	}
	var jobs []job
	h.mu.Lock()
	for id, r := range h.runs {
		if slices.Contains(activeStates, r.State) {
			jobs = append(jobs, job{id, r.targets})
		}
	}
	h.mu.Unlock()
	if len(jobs) == 0 || c.deps.Store == nil {
		return
	}
	now := c.clock.Now().UnixMilli()
	for _, j := range jobs {
		c.m.polls.Inc()
		ends, err := c.deps.Store.RunMetricEnds(ctx, h.id, j.id, kafkasignals.MetricLoadOffered, kafkasignals.MetricLoadAcked, kafkasignals.MetricConsumerLag)
		if err != nil {
			c.m.pollErrs.Inc()
			c.logger.Debug("live poll failed", zap.String("run_id", j.id), zap.Error(err))
			continue
		}
		fig := map[string]*float64{}
		for _, e := range ends {
			v := e.Last
			if cur, ok := fig[e.Name]; ok && cur != nil {
				v += *cur // one series per label set (partition, instance): summed
			}
			fig[e.Name] = &v
		}
		nodes, roles := targetNodes(j.targets)
		// The window spans two intervals: a collector's sample lands
		// within one interval of its instant, or a little after.
		window := max(2*c.cfg.PollInterval.Milliseconds(), 3000)
		power, err := c.deps.Store.RecentPower(ctx, nodes, now-window, now, roles)
		if err != nil {
			c.m.pollErrs.Inc()
			c.logger.Debug("live power poll failed", zap.String("run_id", j.id), zap.Error(err))
		}
		h.updateRun(j.id, func(r *liveRun) {
			if o := fig[kafkasignals.MetricLoadOffered]; o != nil {
				r.Offered = o
			}
			r.Delivered, r.Lag = fig[kafkasignals.MetricLoadAcked], fig[kafkasignals.MetricConsumerLag]
			if len(power) > 0 {
				r.Power = map[string]float64{}
				r.Estimated = slices.DeleteFunc(r.Estimated, func(s string) bool { return s != "energy" })
				for _, p := range power {
					r.Power[p.Component] = p.W
					if p.Estimated {
						r.Estimated = append(r.Estimated, p.Component)
					}
				}
			}
			r.UpdatedMs = now
		})
	}
}

// targetNodes are the targets' nodes and their roles by target id.
func targetNodes(ts []events.Target) ([]string, map[string]string) {
	var nodes []string
	roles := map[string]string{}
	for _, t := range ts {
		if !slices.Contains(nodes, t.Node) {
			nodes = append(nodes, t.Node)
		}
		if t.Role != "" && t.Kind != "node" {
			roles[t.ID] = t.Role
		}
	}
	return nodes, roles
}

// powerOrder sorts power components as the report does: node totals, the
// roles, then other processes and the unattributed rest.
func powerOrder(comps []string) []string {
	order := append([]string{"node"}, results.Roles()...)
	rank := func(c string) int {
		for i, r := range order {
			if strings.HasPrefix(c, r) {
				return i
			}
		}
		return len(order)
	}
	slices.SortStableFunc(comps, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return comps
}
