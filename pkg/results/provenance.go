package results

import "encoding/json"

// Provenance is what an experiment's results were produced from: the spec
// (resolved, and its hash), the code (version and commit), the machine the
// scheduler ran on, the seed of its random choices, and the meters each
// configuration asked for. The results API, `greenflow export`
// (provenance.json) and `greenflow report` show the same document.
type Provenance struct {
	ExperimentID     string `json:"experiment_id"`
	Name             string `json:"name"`
	SpecHash         string `json:"spec_hash"`
	GreenflowVersion string `json:"greenflow_version"`
	Commit           string `json:"commit"`
	// CommitNote says why the commit is unknown or missing, so a reader
	// is never left to guess what "unknown" means.
	CommitNote string `json:"commit_note,omitempty"`
	// CommitSource says where the scheduler took the commit from: the
	// build's -ldflags, Go's VCS stamp, or the git checkout it ran in —
	// the last is what the working directory held at run time, not
	// necessarily what was built.
	CommitSource string `json:"commit_source,omitempty"`
	// Machine is the scheduler's record of the machine it ran on (host,
	// CPU model and count, kernel, Go version).
	Machine json.RawMessage `json:"machine,omitempty"`
	Seed    int64           `json:"seed"`
	// Spec is the resolved spec (defaults and overrides applied).
	Spec   json.RawMessage   `json:"spec,omitempty"`
	Meters []MeterProvenance `json:"meters"`
	// Missing names what was not stored (an experiment record lost or
	// never written), instead of leaving fields silently empty.
	Missing []string `json:"missing,omitempty"`
}

// MeterProvenance is the meter configuration of one run configuration.
type MeterProvenance struct {
	ConfigHash string `json:"config_hash"`
	// Requested is the configuration's `meters` section (sources,
	// interval, model and its coefficients) as the runs were given it.
	Requested json.RawMessage `json:"requested,omitempty"`
	// Effective is what the collectors recorded applying to the
	// configuration's runs (table run_meters: node, source, interval,
	// meter, model with its coefficients); empty when none did, and
	// EffectiveNote says so.
	Effective     json.RawMessage `json:"effective,omitempty"`
	EffectiveNote string          `json:"effective_note,omitempty"`
}

// CommitUnknownNote explains a commit recorded as unknown.
const CommitUnknownNote = "the binary that ran the experiment could not tell its commit: built without the Makefile's -ldflags " +
	"and without VCS stamping (GOFLAGS=-buildvcs=false), and not run inside a git checkout"

// EffectiveMetersNote explains an empty MeterProvenance.Effective.
const EffectiveMetersNote = "not recorded: no collector stored the configuration it applied to these runs (collectors before " +
	"per-run meters, or none was assigned); the requested one is shown"
