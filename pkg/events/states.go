package events

// Run states, in lifecycle order: the State of run.state events and of the
// scheduler's run records. A run ends in one of the final states.
const (
	RunStatePending      = "pending"
	RunStateProvisioning = "provisioning"
	RunStateBaseline     = "baseline"
	RunStateWarmup       = "warmup"
	RunStateMeasuring    = "measuring"
	RunStateCooldown     = "cooldown"
	RunStateTeardown     = "teardown"
	RunStateAnalyzing    = "analyzing"
	RunStateDone         = "done"
	RunStateFailed       = "failed"
	RunStateCancelled    = "cancelled"
)

// RunStates lists every run state in lifecycle order (final ones last).
var RunStates = []string{RunStatePending, RunStateProvisioning, RunStateBaseline, RunStateWarmup, RunStateMeasuring, RunStateCooldown, RunStateTeardown,
	RunStateAnalyzing, RunStateDone, RunStateFailed, RunStateCancelled}

// RunFinal reports whether a run state is final: done, failed or cancelled.
func RunFinal(state string) bool {
	return state == RunStateDone || state == RunStateFailed || state == RunStateCancelled
}

// Experiment states: the State of experiment.state events and of the
// scheduler's experiment records. An experiment is queued until a run
// starts, running until every run is final, then done (at least one run
// done), failed (none done) or cancelled.
const (
	// ExperimentStateSubmitted is an experiment the API has given an id
	// whose spec the scheduler has not expanded into runs yet. It is a
	// state of the scheduler's record and API only: experiment.state
	// announces an experiment from queued on.
	ExperimentStateSubmitted = "submitted"
	ExperimentStateQueued    = "queued"
	ExperimentStateRunning   = "running"
	ExperimentStateDone      = "done"
	ExperimentStateFailed    = "failed"
	ExperimentStateCancelled = "cancelled"
)

// ExperimentStates lists every experiment state in lifecycle order (final
// ones last): the states an experiment can be listed in.
var ExperimentStates = []string{ExperimentStateSubmitted, ExperimentStateQueued, ExperimentStateRunning, ExperimentStateDone,
	ExperimentStateFailed, ExperimentStateCancelled}

// ExperimentFinal reports whether an experiment state is final.
func ExperimentFinal(state string) bool {
	return state == ExperimentStateDone || state == ExperimentStateFailed || state == ExperimentStateCancelled
}
