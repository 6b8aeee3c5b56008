package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

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
	// Testbed is the reservation the platform ran on when `greenflow
	// testbed up` reserved and deployed it (nil otherwise): the scheduler
	// stamps it into each experiment it accepts.
	Testbed *TestbedProvenance `json:"testbed,omitempty"`
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

// TestbedProvenance is the testbed reservation an experiment ran on: where
// (site, cluster), under which job, on which machines in which pool, and
// for how long the machines were the user's. `greenflow testbed up` hands
// it to the platform it deploys (the ConfigMap greenflow-testbed, file
// reservation.json); the scheduler records it with every experiment it
// accepts, and its runs ran on these nodes.
type TestbedProvenance struct {
	Backend string `json:"backend"` // grid5000
	// Reservation is the testbed spec's name (greenflow testbed status).
	Reservation string `json:"reservation"`
	// ID is the backend's handle on the reservation (grid5000: site/uid).
	ID      string `json:"id"`
	Site    string `json:"site,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	// JobID is the backend's job (grid5000: the OAR job uid).
	JobID    string `json:"job_id,omitempty"`
	Walltime string `json:"walltime,omitempty"`
	// StartedAt is when the machines became the user's; EndsAt when the
	// backend takes them back (the walltime's end); ReleaseBy when
	// GreenFlow releases them (EndsAt less the spec's margin).
	StartedAt time.Time     `json:"started_at"`
	EndsAt    time.Time     `json:"ends_at"`
	ReleaseBy time.Time     `json:"release_by"`
	Nodes     []TestbedNode `json:"nodes"`
}

// TestbedNode is one reserved machine: its FQDN, the pool (role) it
// served, and its hardware as the backend describes it.
type TestbedNode struct {
	Host        string `json:"host"`
	Role        string `json:"role"`
	CPUModel    string `json:"cpu_model,omitempty"`
	Cores       int    `json:"cores,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	// Wattmeter: whether the node has one; null when its facts could not
	// be looked up (FactsMissing says why) — unknown, not absent.
	Wattmeter *bool `json:"wattmeter"`
	// FactsMissing is why the node's hardware facts are unknown; the
	// provenance's Missing names it (TestbedFactsMissing).
	FactsMissing string `json:"facts_missing,omitempty"`
}

// TestbedFactsMissing is what an experiment's provenance lists as missing
// for a reserved node whose hardware facts could not be looked up.
func TestbedFactsMissing(n TestbedNode) string {
	return "the hardware facts of testbed node " + n.Host + " (wattmeter, CPU, memory: unknown; the lookup failed: " + n.FactsMissing + ")"
}

// ParseTestbedProvenance decodes a reservation as `greenflow testbed up`
// hands it to the platform, checking what an experiment's provenance
// needs of it.
func ParseTestbedProvenance(data []byte) (TestbedProvenance, error) {
	var p TestbedProvenance
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("testbed reservation: expected the JSON greenflow testbed up writes: %w", err)
	}
	var errs []error
	for _, f := range []struct{ name, v string }{{"backend", p.Backend}, {"reservation", p.Reservation}, {"id", p.ID}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("testbed reservation: %s: empty, expected a value", f.name))
		}
	}
	if len(p.Nodes) == 0 {
		errs = append(errs, errors.New("testbed reservation: nodes: empty, expected the reserved machines"))
	}
	for i, n := range p.Nodes {
		if n.Host == "" || n.Role == "" {
			errs = append(errs, fmt.Errorf("testbed reservation: nodes[%d]: host %q, role %q: expected both", i, n.Host, n.Role))
		}
	}
	return p, errors.Join(errs...)
}

// TestbedUnreadableNote prefixes the reason an experiment run with a
// testbed reservation file has no testbed in its provenance.
const TestbedUnreadableNote = "the testbed reservation (the scheduler's --testbed-reservation-file could not be read: "
