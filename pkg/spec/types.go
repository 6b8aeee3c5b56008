package spec

import (
	"encoding/json"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Experiment is the whole document.
type Experiment struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       Spec     `yaml:"spec" json:"spec"`
}

// Metadata names the experiment.
type Metadata struct {
	Name   string            `yaml:"name" json:"name"`
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// Spec is what to run.
type Spec struct {
	RunConfig `yaml:",inline" json:",inline"`
	Factors   []Factor `yaml:"factors,omitempty" json:"factors,omitempty"`
	// Include adds combinations to the grid (factor name → value); Exclude
	// removes every grid combination matching all of an entry's values.
	Include     []map[string]string `yaml:"include,omitempty" json:"include,omitempty"`
	Exclude     []map[string]string `yaml:"exclude,omitempty" json:"exclude,omitempty"`
	SLOs        SLOs                `yaml:"slos" json:"slos"`
	Trigger     *Trigger            `yaml:"trigger,omitempty" json:"trigger,omitempty"`
	Search      *Search             `yaml:"search,omitempty" json:"search,omitempty"`
	Repetitions int                 `yaml:"repetitions" json:"repetitions"`
	Order       string              `yaml:"order,omitempty" json:"order,omitempty"` // random (default) | sequential
	Seed        int64               `yaml:"seed,omitempty" json:"seed,omitempty"`   // 0: the submission time (ms), recorded
}

// RunConfig is the concrete configuration of one run; factors override its
// fields by path (e.g. workload.sensors, sut.params.instances).
type RunConfig struct {
	SUT      SUT      `yaml:"sut" json:"sut"`
	Workload Workload `yaml:"workload" json:"workload"`
	Kafka    Kafka    `yaml:"kafka" json:"kafka"`
	Phases   Phases   `yaml:"phases" json:"phases"`
	Meters   Meters   `yaml:"meters" json:"meters"`
}

// SUT is the system under test.
type SUT struct {
	Template string            `yaml:"template" json:"template"`
	Backend  string            `yaml:"backend" json:"backend"`
	Params   map[string]string `yaml:"params,omitempty" json:"params,omitempty"`
	Command  []string          `yaml:"command,omitempty" json:"command,omitempty"`
	// Kubernetes configures backend kubernetes; factors reach it by path,
	// e.g. sut.kubernetes.replicas or sut.kubernetes.placement.nodes.
	Kubernetes *KubernetesSUT `yaml:"kubernetes,omitempty" json:"kubernetes,omitempty"`
}

// KubernetesSUT is how backend kubernetes deploys each run.
type KubernetesSUT struct {
	Image           string `yaml:"image,omitempty" json:"image,omitempty"`
	ImagePullPolicy string `yaml:"imagePullPolicy,omitempty" json:"imagePullPolicy,omitempty"`
	// Replicas is the number of instances (Flink: task managers); default 1.
	Replicas  int               `yaml:"replicas,omitempty" json:"replicas,omitempty"`
	Resources Resources         `yaml:"resources,omitempty" json:"resources,omitempty"`
	Env       map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// KafkaBootstrap is the brokers' address from inside the cluster
	// (default: the run's brokers).
	KafkaBootstrap    string `yaml:"kafkaBootstrap,omitempty" json:"kafkaBootstrap,omitempty"`
	SchemaRegistryURL string `yaml:"schemaRegistryUrl,omitempty" json:"schemaRegistryUrl,omitempty"`
	// Manifest is the template text for template "manifest".
	Manifest     string    `yaml:"manifest,omitempty" json:"manifest,omitempty"`
	Placement    Placement `yaml:"placement,omitempty" json:"placement,omitempty"`
	ReadyTimeout Duration  `yaml:"readyTimeout,omitempty" json:"readyTimeout,omitempty"`
}

// Resources is each SUT container's CPU and memory (request = limit).
type Resources struct {
	CPU    string `yaml:"cpu,omitempty" json:"cpu,omitempty"`
	Memory string `yaml:"memory,omitempty" json:"memory,omitempty"`
}

// Placement says where a run's pods go: strategy any (the scheduler
// decides), spread (across nodes) or consolidate (onto nodes nodes).
type Placement struct {
	Strategy     string            `yaml:"strategy,omitempty" json:"strategy,omitempty"`
	Nodes        int               `yaml:"nodes,omitempty" json:"nodes,omitempty"`
	NodeSelector map[string]string `yaml:"nodeSelector,omitempty" json:"nodeSelector,omitempty"`
}

// Workload is the UC-3 load.
type Workload struct {
	Sensors    int     `yaml:"sensors" json:"sensors"`
	PeriodMs   int     `yaml:"periodMs" json:"periodMs"`
	RatePerSec float64 `yaml:"ratePerSec,omitempty" json:"ratePerSec,omitempty"`
	Value      float64 `yaml:"value" json:"value"`
	Format     string  `yaml:"format" json:"format"`
	SchemaID   uint32  `yaml:"schemaId,omitempty" json:"schemaId,omitempty"`
}

// Kafka is the run's data plane.
type Kafka struct {
	Partitions  int    `yaml:"partitions" json:"partitions"`
	InputTopic  string `yaml:"inputTopic,omitempty" json:"inputTopic,omitempty"`
	OutputTopic string `yaml:"outputTopic,omitempty" json:"outputTopic,omitempty"`
}

// Phases are the timed parts of a run.
type Phases struct {
	Baseline Duration `yaml:"baseline" json:"baseline"`
	Warmup   Duration `yaml:"warmup" json:"warmup"`
	Measure  Duration `yaml:"measure" json:"measure"`
	Cooldown Duration `yaml:"cooldown" json:"cooldown"`
}

// Meters chooses energy sources.
type Meters struct {
	Source string       `yaml:"source" json:"source"` // auto | rapl | model
	Model  ModelMeter   `yaml:"model" json:"model"`
	Sample Duration     `yaml:"interval,omitempty" json:"interval,omitempty"`
	Extra  []ExtraMeter `yaml:"extra,omitempty" json:"extra,omitempty"`
}

// ModelMeter is the linear CPU-utilisation power model, for nodes without
// a readable meter. Left empty, each node's profile is used: per-vCPU
// watts (energy.DefaultIdleWattsPerVCPU, energy.DefaultMaxWattsPerVCPU, or
// coefficients calibrated against a hardware meter) times its vCPUs, plus
// platform watts for its memory. Per-vCPU fields replace the coefficients;
// idleWatts/maxWatts (maxWatts > 0) are node totals replacing the profile.
type ModelMeter struct {
	IdleWatts        float64 `yaml:"idleWatts" json:"idleWatts"`
	MaxWatts         float64 `yaml:"maxWatts" json:"maxWatts"`
	IdleWattsPerVCPU float64 `yaml:"idleWattsPerVCPU,omitempty" json:"idleWattsPerVCPU,omitempty"`
	MaxWattsPerVCPU  float64 `yaml:"maxWattsPerVCPU,omitempty" json:"maxWattsPerVCPU,omitempty"`
	PlatformWatts    float64 `yaml:"platformWatts,omitempty" json:"platformWatts,omitempty"`
}

// IsZero reports whether the spec leaves the model to the nodes' profiles.
func (m ModelMeter) IsZero() bool { return m == ModelMeter{} }

// ExtraMeter names an additional exporter (deepened by the collector work).
type ExtraMeter struct {
	Kind string `yaml:"kind" json:"kind"`
	URL  string `yaml:"url" json:"url"`
}

// SLOs are the service-level objectives a run must meet to count as
// sustained (Theodolite's lag trend; the original GreenFlow's throughput ratio).
type SLOs struct {
	LagTrendSlope      float64  `yaml:"lagTrendSlope" json:"lagTrendSlope"`           // msg/s of lag growth allowed
	LagWarmup          Duration `yaml:"lagWarmup" json:"lagWarmup"`                   // from the load's start, dropped before the fit (0: the fit starts with the window)
	MinThroughputRatio float64  `yaml:"minThroughputRatio" json:"minThroughputRatio"` // achieved / offered
}

// Search finds the maximum sustainable load instead of sweeping factors, as
// the original GreenFlow and Theodolite do: the load (workload.ratePerSec)
// doubles from Start while runs are sustained — achieved throughput at least
// slos.minThroughputRatio of the offered load and the lag-trend SLO met —
// then bisects between the last sustained and the first unsustained load
// until they are within Tolerance (relative). Each probe runs once per
// repetition; a level is sustained when the majority of its runs are.
type Search struct {
	Start     float64 `yaml:"start" json:"start"`
	Max       float64 `yaml:"max" json:"max"`
	Tolerance float64 `yaml:"tolerance" json:"tolerance"`
}

// Trigger makes a spec a template: instead of running at once it runs when
// an event arrives on Subject (with Bind copying event fields, by dotted JSON
// path, into spec fields) or on a Cron schedule (5 fields, UTC).
type Trigger struct {
	Subject string            `yaml:"subject,omitempty" json:"subject,omitempty"`
	Bind    map[string]string `yaml:"bind,omitempty" json:"bind,omitempty"` // spec path → event field
	Cron    string            `yaml:"cron,omitempty" json:"cron,omitempty"`
}

// Factor is one swept dimension: a path and its values.
type Factor struct {
	Name   string   `yaml:"name" json:"name"`
	Values []string `yaml:"values,omitempty" json:"values,omitempty"`
	Range  *Range   `yaml:"range,omitempty" json:"range,omitempty"`
}

// Range generates numeric values from..to (inclusive) by step.
type Range struct {
	From float64 `yaml:"from" json:"from"`
	To   float64 `yaml:"to" json:"to"`
	Step float64 `yaml:"step" json:"step"`
}

// Duration is a time.Duration written as "30s" in YAML and JSON.
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: expected a duration such as 30s", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q: expected a duration such as 30s", n.Line, s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Rate is the total offered msg/s of the workload.
func (w Workload) Rate() float64 {
	if w.RatePerSec > 0 {
		return w.RatePerSec
	}
	return float64(w.Sensors) * 1000 / float64(w.PeriodMs)
}

// Run is one expanded run.
type Run struct {
	ID         string            `json:"id"`
	Index      int               `json:"index"`
	Repetition int               `json:"repetition"`
	Factors    map[string]string `json:"factors"`
	Config     RunConfig         `json:"config"`
	ConfigHash string            `json:"config_hash"`
}

// Plan is the expansion of an experiment.
type Plan struct {
	Runs []Run
	Seed int64
}
