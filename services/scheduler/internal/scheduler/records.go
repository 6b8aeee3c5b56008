package scheduler

import (
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/spec"
)

// The state bucket's keys: one per experiment, run, armed trigger
// (trigger.go) and cluster's slot set (slots.go).
func expKey(id string) string { return "exp." + id }
func runKey(id string) string { return "run." + id }

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
	// Pending marks the record the API writes before it answers a
	// submission (state submitted, or cancelled by a cancel that came
	// first): the id is known and a cancel can be recorded on it, but the
	// submission's consumer has not expanded the spec into runs yet. It
	// clears when that consumer settles the record (submission.go).
	Pending bool `json:"pending,omitempty"`
	// RunsPlanned is the number of runs the spec expands to, known to the
	// API before the runs exist.
	RunsPlanned int `json:"runs_planned,omitempty"`
	// Labels are the spec's metadata.labels and SubmittedBy who submitted
	// it (api, http:<token name>, trigger/<name>): the list filters on
	// them without reading specs.
	Labels      map[string]string `json:"labels,omitempty"`
	SubmittedBy string            `json:"submitted_by,omitempty"`
	// Testbed is the reservation the platform ran on when the experiment
	// was accepted (Config.TestbedReservationFile); nil off a testbed.
	Testbed *results.TestbedProvenance `json:"testbed,omitempty"`
	// Cancelling: the experiment is cancelled but its cancellation is not
	// finished — runs to stop and cancel, the final rows to store, the
	// cancellation to announce. The cancel sets it in the write that marks
	// the experiment and returns; the sweep (sweep.go) does the rest and
	// clears it, so a crash at any point leaves a record the next
	// scheduler finishes.
	Cancelling bool `json:"cancelling,omitempty"`
	// Spec, on a pending record, is the submitted spec waiting for the
	// expander (submission.go); settling the record drops it.
	Spec string `json:"spec,omitempty"`
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
	// LoadPermanent: the load failed in a way a retry would repeat
	// (load.finished v3's permanent: the generators could not keep up).
	LoadPermanent bool `json:"load_permanent,omitempty"`
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
	// NotBeforeMs is when a retry may start at the earliest: a transient
	// failure's retry waits out a back-off (retries.go).
	NotBeforeMs int64 `json:"not_before_ms,omitempty"`

	// entered is set (in memory only) when a transition happened in this
	// update, so its entry command is published once the write commits.
	entered bool
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
	if !events.RunFinal(state) {
		r.Phases = append(r.Phases, events.Phase{Name: state, StartMs: nowMs})
	}
}
