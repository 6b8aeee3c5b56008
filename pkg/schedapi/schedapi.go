// Package schedapi declares the documents of the scheduler's HTTP API
// once — an experiment's status and its runs, a submission's answer, a dry
// run's problems and preview, an armed trigger — for the scheduler that
// writes them and the clients that read them (the web console, the CLI):
// services cannot import each other, and a copy per client drifts.
package schedapi

import (
	"encoding/json"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
)

// ErrorReply is the body of every refusal of the API (any status but
// 2xx): what went wrong and, for a spec, every problem found, each as the
// CLI prints it ("line 5: spec.repetitons: unknown field ..."). pkg/auth's
// refusals (auth.WriteError) have the same shape, without problems.
type ErrorReply struct {
	// Error is omitted when empty so that a SubmitReply that is not a
	// refusal carries no "error".
	Error    string   `json:"error,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// ReadError reads a refusal's body: its ErrorReply, or, when the body is
// not one (a proxy's page, a panic's text), the body itself as the error.
func ReadError(body []byte) ErrorReply {
	var e ErrorReply
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
	}
	return e
}

// SubmitReply answers a submission: the id, or (refused) every problem
// found, which the HTTP API answers as the ErrorReply alone.
type SubmitReply struct {
	ID    string `json:"id,omitempty"`
	Runs  int    `json:"runs,omitempty"`
	Armed string `json:"armed_trigger,omitempty"` // the spec is a template with a trigger
	ErrorReply
}

// RunStatus is one run as list and status show it.
type RunStatus struct {
	RunID      string            `json:"run_id"`
	Index      int               `json:"index"`
	Repetition int               `json:"repetition"`
	Factors    map[string]string `json:"factors"`
	State      string            `json:"state"`
	Reason     string            `json:"reason,omitempty"`
	PhaseEndMs int64             `json:"phase_end_ms,omitempty"`
	// StartsMs is when a pending retry may start (its back-off ends).
	StartsMs int64          `json:"starts_ms,omitempty"`
	Phases   []events.Phase `json:"phases"`
	// Flags name what the analysis recovered or bridged (e.g.
	// energy_gap_bridged, load_takeover).
	Flags []string `json:"flags,omitempty"`
}

// ExperimentStatus is an experiment with its runs.
type ExperimentStatus struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	CreatedMs int64  `json:"created_ms"`
	Seed      int64  `json:"seed"`
	// RunsTotal is the experiment's runs; while it is submitted (not
	// expanded yet), the runs its spec expands to.
	RunsTotal int `json:"runs_total"`
	// Labels are the spec's metadata.labels; SubmittedBy who submitted it.
	Labels      map[string]string `json:"labels,omitempty"`
	SubmittedBy string            `json:"submitted_by,omitempty"`
	RunsDone    int               `json:"runs_done"`
	// RunsFail counts failed runs; cancelled ones are RunsCancelled.
	RunsFail      int         `json:"runs_failed"`
	RunsCancelled int         `json:"runs_cancelled"`
	Runs          []RunStatus `json:"runs,omitempty"`
	// Testbed is the reservation the experiment ran on (one experiment's
	// status only, not lists); nil off a testbed.
	Testbed *results.TestbedProvenance `json:"testbed,omitempty"`
}

// Problem is one problem of a spec, taken apart for an editor: the line it
// was written on (0: not on a line — an override, or the whole spec), the
// --set override that caused it, the field path and the words.
type Problem struct {
	Line    int    `json:"line,omitempty"`
	Set     string `json:"set,omitempty"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
	// Text is the problem as the CLI prints it.
	Text string `json:"text"`
}

// ValidateReply answers a dry run: whether the spec would be accepted,
// every problem, and what it would run.
type ValidateReply struct {
	Valid    bool      `json:"valid"`
	Error    string    `json:"error,omitempty"`
	Problems []Problem `json:"problems"`
	// Runs is how many runs the sweep expands to; Trigger names the
	// template a submission would arm instead.
	Runs    int    `json:"runs,omitempty"`
	Trigger string `json:"trigger,omitempty"`
	// RunSeconds is one run's timed phases; EstimatedSeconds all runs' one
	// after another (at concurrency 1: provisioning, analysis and teardown
	// come on top, so it is a lower bound). A capacity search's probes are
	// not known in advance: its figure is its first probe's.
	RunSeconds       float64 `json:"run_seconds,omitempty"`
	EstimatedSeconds float64 `json:"estimated_seconds,omitempty"`
}

// TriggerStatus is an armed template as the API lists it.
type TriggerStatus struct {
	Name        string            `json:"name"`
	Subject     string            `json:"subject,omitempty"`
	Cron        string            `json:"cron,omitempty"`
	Bind        map[string]string `json:"bind,omitempty"`
	Fired       int               `json:"fired"`
	LastFiredMs int64             `json:"last_fired_ms,omitempty"`
	NextFireMs  int64             `json:"next_fire_ms,omitempty"`
	CreatedMs   int64             `json:"created_ms"`
}
