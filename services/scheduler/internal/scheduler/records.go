package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
)

// Run states, in lifecycle order.
const (
	StatePending      = "pending"
	StateProvisioning = "provisioning"
	StateBaseline     = "baseline"
	StateWarmup       = "warmup"
	StateMeasuring    = "measuring"
	StateCooldown     = "cooldown"
	StateTeardown     = "teardown"
	StateAnalyzing    = "analyzing"
	StateDone         = "done"
	StateFailed       = "failed"
	StateCancelled    = "cancelled"
)

// Terminal reports whether a run state is final.
func Terminal(state string) bool {
	return state == StateDone || state == StateFailed || state == StateCancelled
}

// ExperimentRecord is an experiment's state in the KV bucket.
type ExperimentRecord struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	State     string   `json:"state"`
	Reason    string   `json:"reason,omitempty"`
	RunIDs    []string `json:"run_ids"`
	Seed      int64    `json:"seed"`
	CreatedMs int64    `json:"created_ms"`
	// Search is set for capacity-search experiments.
	Search *SearchState `json:"search,omitempty"`
}

// RunRecord is a run's state in the KV bucket: everything needed to resume
// it after a scheduler restart.
type RunRecord struct {
	ExperimentID string            `json:"experiment_id"`
	RunID        string            `json:"run_id"`
	Index        int               `json:"index"`
	Repetition   int               `json:"repetition"`
	Factors      map[string]string `json:"factors"`
	Config       spec.RunConfig    `json:"config"`
	ConfigHash   string            `json:"config_hash"`
	State        string            `json:"state"`
	Reason       string            `json:"reason,omitempty"`
	EnteredMs    int64             `json:"entered_ms"`   // when the current state began
	PhaseEndMs   int64             `json:"phase_end_ms"` // deadline of a timed phase
	Phases       []events.Phase    `json:"phases"`
	Targets      []events.Target   `json:"targets,omitempty"`
	LoadDone     bool              `json:"load_done"`
	RecordsSent  int64             `json:"records_sent"`
	LoadFailed   string            `json:"load_failed,omitempty"`
	// The load generator's account of the load (load.finished v2), passed
	// on to the analyzer in run.measured.
	RecordsDelivered    int64  `json:"records_delivered,omitempty"`
	DeliveredFromBroker bool   `json:"delivered_from_broker,omitempty"`
	RecordsMissed       int64  `json:"records_missed,omitempty"`
	RecordsBackfilled   int64  `json:"records_backfilled,omitempty"`
	LoadTakeovers       int    `json:"load_takeovers,omitempty"`
	LoadRestarts        int    `json:"load_restarts,omitempty"`
	LoadNote            string `json:"load_note,omitempty"` // a finished load's remark (e.g. "stopped")
	TornDown            bool   `json:"torn_down"`
	// TeardownIssue is the provisioner's last report of why the teardown
	// is not complete yet (e.g. a missing RBAC verb); a teardown timeout
	// names it.
	TeardownIssue string `json:"teardown_issue,omitempty"`
	// Flags are what the analysis recovered or bridged (run.analyzed).
	Flags     []string `json:"flags,omitempty"`
	CreatedMs int64    `json:"created_ms"`
	// Attempt counts retries; RetryOf names the first attempt's run.
	Attempt   int    `json:"attempt,omitempty"`
	RetryOf   string `json:"retry_of,omitempty"`
	Transient bool   `json:"transient,omitempty"` // the failure may pass on a retry
	RetriedAs string `json:"retried_as,omitempty"`

	// entered is set (in memory only) when a transition happened in this
	// update, so its entry command is published once the write commits.
	entered bool
}

// retryDue reports a failed run that will be retried but is not yet.
func (r *RunRecord) retryDue(retries int) bool {
	return r.State == StateFailed && r.Transient && r.Attempt < retries && r.RetriedAs == ""
}

// Phase returns the recorded phase by name.
func (r *RunRecord) Phase(name string) (events.Phase, bool) {
	for _, p := range r.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return events.Phase{}, false
}

// enter moves the run to state at nowMs, closing the previous phase.
func (r *RunRecord) enter(state string, nowMs int64) {
	if n := len(r.Phases); n > 0 && r.Phases[n-1].EndMs == 0 {
		r.Phases[n-1].EndMs = nowMs
	}
	r.State = state
	r.EnteredMs = nowMs
	r.PhaseEndMs = 0
	r.entered = true
	if !Terminal(state) {
		r.Phases = append(r.Phases, events.Phase{Name: state, StartMs: nowMs})
	}
}

func expKey(id string) string { return "exp." + id }
func runKey(id string) string { return "run." + id }

var errConflict = errors.New("revision conflict")

// kvStore wraps the bucket with typed, revision-checked access.
type kvStore struct{ kv jetstream.KeyValue }

func (k kvStore) get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// create writes a new key and returns its revision; it fails if the key
// exists.
func (k kvStore) create(ctx context.Context, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	return k.kv.Create(ctx, key, b)
}

// versioned is a value with the KV revision it was read or written at.
type versioned[T any] struct {
	Value    T
	Revision uint64
}

// update applies fn with optimistic concurrency: it re-reads and retries on
// a revision conflict. fn returns false to skip writing. The result carries
// the revision written (or read, when nothing changed).
func update[T any](ctx context.Context, k kvStore, key string, fn func(*T) (bool, error)) (versioned[T], bool, error) {
	for attempt := 0; attempt < 20; attempt++ {
		var v T
		rev, err := k.get(ctx, key, &v)
		if err != nil {
			return versioned[T]{Value: v}, false, fmt.Errorf("read %s: %w", key, err)
		}
		changed, err := fn(&v)
		if err != nil || !changed {
			return versioned[T]{v, rev}, false, err
		}
		b, err := json.Marshal(&v)
		if err != nil {
			return versioned[T]{v, rev}, false, fmt.Errorf("encode %s: %w", key, err)
		}
		nrev, err := k.kv.Update(ctx, key, b, rev)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
				continue
			}
			return versioned[T]{v, rev}, false, fmt.Errorf("write %s: %w", key, err)
		}
		return versioned[T]{v, nrev}, true, nil
	}
	return versioned[T]{}, false, fmt.Errorf("write %s: %w after 20 attempts", key, errConflict)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
