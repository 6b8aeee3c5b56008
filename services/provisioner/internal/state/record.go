package state

import (
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
)

// Record states, in order.
const (
	// Starting: the record exists, the SUT may be starting; Owner holds
	// the provision until LeaseUntilMs.
	Starting = "starting"
	// Running: provisioned; its liveness is watched.
	Running = "running"
	// Stopping: its teardown is wanted (Teardown says why and how far).
	Stopping = "stopping"
	// TornDown: nothing of it is left; Result is what was reported, and is
	// reported again to a repeated teardown.
	TornDown = "torn_down"
)

// Record is everything the provisioner knows of one run.
type Record struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	Backend      string `json:"backend"`
	// Node is the machine running a local run's processes.
	Node  string `json:"node,omitempty"`
	State string `json:"state"`
	// Owner is the instance provisioning the run; a provision whose
	// lease ran out (its instance died) may be taken over.
	Owner        string `json:"owner,omitempty"`
	LeaseUntilMs int64  `json:"lease_until_ms,omitempty"`
	// OwnerProc is the owner's process: an instance of the same machine
	// that finds it gone (a provisioner killed and restarted) takes the
	// provision over at once instead of waiting out the lease.
	OwnerProc *procfs.Incarnation `json:"owner_proc,omitempty"`
	Kafka     *events.Kafka       `json:"kafka,omitempty"`
	Targets   []events.Target     `json:"targets,omitempty"`
	Process   *Process            `json:"process,omitempty"`
	// ProvisionFailed is the reason a provision failed (reported again to
	// a redelivered provision); Transient as reported.
	ProvisionFailed string    `json:"provision_failed,omitempty"`
	Transient       bool      `json:"transient,omitempty"`
	Teardown        *Teardown `json:"teardown,omitempty"`
	// Result is the final report of a torn-down run.
	Result    *events.RunTornDown `json:"result,omitempty"`
	CreatedMs int64               `json:"created_ms"`
	UpdatedMs int64               `json:"updated_ms"`
}

// Process is a local run's process: the shim that records the exit status
// (session and process group leader) and the SUT it runs.
type Process struct {
	ShimPID        int    `json:"shim_pid"`
	ShimStartTicks uint64 `json:"shim_start_ticks"`
	PGID           int    `json:"pgid"`
	PID            int    `json:"pid,omitempty"`
	StartTicks     uint64 `json:"start_ticks,omitempty"`
	// BootID is the boot the pids and start times belong to.
	BootID string   `json:"boot_id"`
	Log    string   `json:"log"`
	Status string   `json:"status"`
	Argv   []string `json:"argv"`
	// Signalled: a teardown (or a provisioner stopping with its SUTs) sent
	// it a signal, so its exit is not a crash.
	Signalled bool `json:"signalled,omitempty"`
	// StoppedAtShutdown: stopped when its provisioner stopped (greenflow
	// dev); the run cannot go on.
	StoppedAtShutdown bool `json:"stopped_at_shutdown,omitempty"`
}

// Teardown is a wanted teardown and its progress; the reconciler works
// on it until both the SUT and the topics are gone.
type Teardown struct {
	RequestedMs int64 `json:"requested_ms"`
	// Cause says why: "teardown command", "crash", "provision failed",
	// "run failed" (a final run state), "unknown run".
	Cause string `json:"cause"`
	// From is the run's state when its teardown was wanted: only a run
	// that was running can have crashed.
	From string `json:"from,omitempty"`
	// Report: publish run.torn_down (a command asked, or the SUT crashed).
	Report bool `json:"report,omitempty"`
	// Crashed: the SUT had exited on its own before teardown.
	Crashed     bool   `json:"crashed,omitempty"`
	CrashReason string `json:"crash_reason,omitempty"`
	// Lost: there was no record of the run, or its SUT was not found.
	Lost       bool   `json:"lost,omitempty"`
	LostReason string `json:"lost_reason,omitempty"`
	// SUTRemoved and TopicsRemoved are done independently: a failure of
	// one never skips the other.
	SUTRemoved    bool `json:"sut_removed,omitempty"`
	TopicsRemoved bool `json:"topics_removed,omitempty"`
	Attempts      int  `json:"attempts,omitempty"`
	// NextMs is when the next attempt may start; while an attempt runs it
	// is that attempt's lease.
	NextMs int64  `json:"next_ms,omitempty"`
	Owner  string `json:"owner,omitempty"`
	// OwnerProc is the process of the instance running an attempt; an
	// instance of the same machine that finds it gone does not wait for
	// NextMs.
	OwnerProc *procfs.Incarnation `json:"owner_proc,omitempty"`
	LastError string              `json:"last_error,omitempty"`
}

// Final is a run the scheduler has ended, from its run.state events.
type Final struct {
	RunID string `json:"run_id"`
	State string `json:"state"`
	AtMs  int64  `json:"at_ms"`
}

// Leftover is what a backend finds of a run on its node or cluster
// (processes carrying the run's markers, a namespace labelled with it),
// whatever the records say.
type Leftover struct {
	RunID, ExperimentID string
	// Platform is the installation that created it ("" when it carries
	// none: made by an older provisioner).
	Platform string
	// Since is when it was created (its oldest process, the namespace).
	Since time.Time
	// Kafka names the run's topics when it carries them.
	Kafka *events.Kafka
	// Kind is process or namespace; What describes it for logs.
	Kind, What string
	// Terminating: already being removed.
	Terminating bool
}
