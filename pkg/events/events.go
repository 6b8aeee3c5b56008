// Package events defines every lifecycle command and event GreenFlow services
// exchange over NATS JetStream. The JSON Schemas under schemas/events are the
// source of truth for the bodies; the registry (registry.go) declares each
// type once — its kind, versions, Go type, producers and consumers — and
// Check verifies it against the schema files. A breaking change gets a new
// version (a new schema file), never an in-place edit.
package events

// Type names a message; with Version it selects the schema.
type Type string

// Every message type; the registry says which are commands and which events.
const (
	TypeExperimentSubmit   Type = "experiment.submit"
	TypeExperimentCancel   Type = "experiment.cancel"
	TypeExperimentState    Type = "experiment.state"
	TypeRunProvision       Type = "run.provision"
	TypeRunProvisioned     Type = "run.provisioned"
	TypeRunProvisionFailed Type = "run.provision_failed"
	TypeRunTeardown        Type = "run.teardown"
	TypeRunTornDown        Type = "run.torn_down"
	TypeRunState           Type = "run.state"
	TypeRunMeasured        Type = "run.measured"
	TypeRunAnalyzed        Type = "run.analyzed"
	TypeLoadStart          Type = "load.start"
	TypeLoadStop           Type = "load.stop"
	TypeLoadProgress       Type = "load.progress"
	TypeLoadFinished       Type = "load.finished"
	TypeCollectAssign      Type = "collect.assign"
	TypeCollectRelease     Type = "collect.release"
)

// Message is implemented by every command and event. Its version is the
// registry's (Version): a type's Go struct carries its newest version.
type Message interface {
	MessageType() Type
	// IDs returns the experiment and run the message is about (run may be "").
	IDs() (experimentID, runID string)
}

// Target is something energy is attributed to: a node, a process (tree) or a pod.
type Target struct {
	ID          string `json:"id"`
	Kind        string `json:"kind"` // node | process | pod
	Node        string `json:"node"`
	Role        string `json:"role,omitempty"` // sut | broker | loadgen | platform
	PID         int    `json:"pid,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Pod         string `json:"pod,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
}

// SUT describes the system under test to deploy for one run.
type SUT struct {
	Template string            `json:"template"` // e.g. uc3-go
	Backend  string            `json:"backend"`  // local | kubernetes
	Params   map[string]string `json:"params,omitempty"`
	Command  []string          `json:"command,omitempty"` // local backend: override of the command line
	// Kubernetes is how the kubernetes backend deploys the run.
	Kubernetes *KubernetesSUT `json:"kubernetes,omitempty"`
}

// KubernetesSUT is the kubernetes backend's part of a run's SUT.
type KubernetesSUT struct {
	Image           string `json:"image,omitempty"`
	ImagePullPolicy string `json:"image_pull_policy,omitempty"`
	// Replicas is the number of instances (Flink: task managers).
	Replicas int `json:"replicas,omitempty"`
	// CPU and Memory are each container's request and limit (quantities).
	CPU    string            `json:"cpu,omitempty"`
	Memory string            `json:"memory,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
	// KafkaBootstrap is the brokers' address as seen from inside the
	// cluster; empty means the run's brokers.
	KafkaBootstrap    string `json:"kafka_bootstrap,omitempty"`
	SchemaRegistryURL string `json:"schema_registry_url,omitempty"`
	// Manifest is the template text of template "manifest".
	Manifest       string    `json:"manifest,omitempty"`
	Placement      Placement `json:"placement"`
	ReadyTimeoutMs int64     `json:"ready_timeout_ms,omitempty"`
}

// Placement says where a run's pods go.
type Placement struct {
	// Strategy is any, spread (at most one pod per node while nodes last) or
	// consolidate (onto Nodes nodes).
	Strategy     string            `json:"strategy,omitempty"`
	Nodes        int               `json:"nodes,omitempty"`
	NodeSelector map[string]string `json:"node_selector,omitempty"`
}

// Kafka names the data plane of a run.
type Kafka struct {
	Brokers     []string `json:"brokers"`
	InputTopic  string   `json:"input_topic"`
	OutputTopic string   `json:"output_topic"`
	Partitions  int      `json:"partitions"`
}

// Workload is the UC-3 load of a run.
type Workload struct {
	Sensors    int     `json:"sensors"`
	PeriodMs   int     `json:"period_ms"`
	RatePerSec float64 `json:"rate_per_sec"` // total msg/s; derived from sensors and period when both are given
	ValueW     float64 `json:"value_w"`
	Format     string  `json:"format"` // avro | json
	SchemaID   uint32  `json:"schema_id"`
}

// Phase is one recorded phase of a run with its measured start and end.
type Phase struct {
	Name    string `json:"name"`
	StartMs int64  `json:"start_ms"`
	EndMs   int64  `json:"end_ms"`
}

// ExperimentSubmit asks the scheduler to run an experiment. Spec is the YAML
// (or JSON) text as the user wrote it; the scheduler validates it.
type ExperimentSubmit struct {
	ExperimentID string `json:"experiment_id"`
	Spec         string `json:"spec"`
	SubmittedBy  string `json:"submitted_by,omitempty"`
}

// ExperimentCancel asks the scheduler to cancel every unfinished run.
type ExperimentCancel struct {
	ExperimentID string `json:"experiment_id"`
	Reason       string `json:"reason,omitempty"`
}

// ExperimentState reports an experiment's progress.
type ExperimentState struct {
	ExperimentID string `json:"experiment_id"`
	Name         string `json:"name"`
	State        string `json:"state"` // queued | running | done | failed | cancelled
	RunsTotal    int    `json:"runs_total"`
	RunsDone     int    `json:"runs_done"`
	RunsFailed   int    `json:"runs_failed"`
	Reason       string `json:"reason,omitempty"`
	TsMs         int64  `json:"ts_ms"`
}

// RunProvision asks the provisioner to deploy a run's system under test.
type RunProvision struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	SUT          SUT    `json:"sut"`
	Kafka        Kafka  `json:"kafka"`
}

// RunProvisioned reports a deployed run and the targets to measure.
type RunProvisioned struct {
	ExperimentID string   `json:"experiment_id"`
	RunID        string   `json:"run_id"`
	Backend      string   `json:"backend"`
	Targets      []Target `json:"targets"`
	TsMs         int64    `json:"ts_ms"`
}

// RunProvisionFailed reports a run that could not be deployed. Transient
// marks a cause that may pass (a broker or API server that is down, a
// timeout, 429/5xx): the scheduler retries the run as a new run.
type RunProvisionFailed struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	Reason       string `json:"reason"`
	Transient    bool   `json:"transient"`
	TsMs         int64  `json:"ts_ms"`
}

// RunTeardown asks the provisioner to remove a run's deployment.
type RunTeardown struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	Backend      string `json:"backend"`
	// Kafka names the run's topics, which the provisioner deletes even when
	// it restarted since it created them.
	Kafka *Kafka `json:"kafka,omitempty"`
}

// RunTornDown reports a removed deployment, or why it is not removed yet.
//
//   - Crashed: the system under test had already exited on its own before
//     teardown (the run is invalid; Reason has the exit status and output).
//   - Lost: the provisioner has no record of the run, or could not find its
//     system under test: nothing proves it ran throughout, so the run is
//     invalid. Never reported as a clean teardown.
//   - Incomplete: removal has not finished (Reason names the cause, e.g. a
//     missing RBAC verb or an unreachable API server); the provisioner keeps
//     trying and reports again, finally with Incomplete false.
type RunTornDown struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	Crashed      bool   `json:"crashed"`
	Lost         bool   `json:"lost"`
	Incomplete   bool   `json:"incomplete"`
	Reason       string `json:"reason,omitempty"`
	TsMs         int64  `json:"ts_ms"`
}

// RunState reports a run's state transition.
type RunState struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	Index        int    `json:"index"`
	State        string `json:"state"`
	Reason       string `json:"reason,omitempty"`
	PhaseEndMs   int64  `json:"phase_end_ms,omitempty"` // when the current timed phase ends
	// NeverStarted (v2): the run ended while pending, before any command
	// was sent for it — nothing of it exists or is in flight, so the
	// provisioner keeps no mark of it (a cancelled sweep of 100,000 runs
	// filled its bucket with them).
	NeverStarted bool  `json:"never_started"`
	TsMs         int64 `json:"ts_ms"`
}

// RunMeasured tells the analyzer that a run's measurement is complete.
type RunMeasured struct {
	ExperimentID   string            `json:"experiment_id"`
	RunID          string            `json:"run_id"`
	ConfigHash     string            `json:"config_hash"`
	Factors        map[string]string `json:"factors"`
	Repetition     int               `json:"repetition"`
	Phases         []Phase           `json:"phases"`
	MeasureStartMs int64             `json:"measure_start_ms"`
	MeasureEndMs   int64             `json:"measure_end_ms"`
	BaselineStart  int64             `json:"baseline_start_ms"`
	BaselineEnd    int64             `json:"baseline_end_ms"`
	Targets        []Target          `json:"targets"`
	RecordsSent    int64             `json:"records_sent"`
	OfferedRate    float64           `json:"offered_rate"`
	// The load generator's account of the load (see LoadFinished).
	RecordsDelivered    int64  `json:"records_delivered"`
	DeliveredFromBroker bool   `json:"delivered_from_broker"`
	RecordsMissed       int64  `json:"records_missed"`
	RecordsBackfilled   int64  `json:"records_backfilled"`
	LoadTakeovers       int    `json:"load_takeovers"`
	LoadRestarts        int    `json:"load_restarts"`
	LoadNote            string `json:"load_note,omitempty"`
	// Notes are what the scheduler saw happen to the run that its results
	// should report (e.g. a retried command).
	Notes []string `json:"notes,omitempty"`
}

// RunAnalyzed reports a run's headline results.
type RunAnalyzed struct {
	ExperimentID   string  `json:"experiment_id"`
	RunID          string  `json:"run_id"`
	DurationS      float64 `json:"duration_s"`
	EnergyJ        float64 `json:"energy_j"`      // SUT energy over the measured window
	NodeEnergyJ    float64 `json:"node_energy_j"` // whole-node energy over the window
	MeanPowerW     float64 `json:"mean_power_w"`
	Events         int64   `json:"events"`
	MicroJPerEvent float64 `json:"uj_per_event"`
	Estimated      bool    `json:"estimated"`
	// Invalid is set when the run broke the platform's invariant (the
	// offered load not delivered in the measured window, samples missing
	// beyond the bridging bound, ...); Reason says why, and the scheduler
	// fails the run. Flags name what was recovered or bridged.
	Invalid bool     `json:"invalid"`
	Reason  string   `json:"reason,omitempty"`
	Flags   []string `json:"flags,omitempty"`
	TsMs    int64    `json:"ts_ms"`
}

// LoadStart asks load generators to produce a run's UC-3 load.
type LoadStart struct {
	ExperimentID string   `json:"experiment_id"`
	RunID        string   `json:"run_id"`
	Workload     Workload `json:"workload"`
	Kafka        Kafka    `json:"kafka"`
	DurationMs   int64    `json:"duration_ms"`
}

// LoadStop asks load generators to stop a run's load early.
type LoadStop struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
}

// LoadProgress is reported every second while load runs.
type LoadProgress struct {
	ExperimentID string  `json:"experiment_id"`
	RunID        string  `json:"run_id"`
	Instance     string  `json:"instance"`
	TsMs         int64   `json:"ts_ms"`
	RecordsSent  int64   `json:"records_sent"` // cumulative, acknowledged by Kafka
	Errors       int64   `json:"errors"`
	RatePerSec   float64 `json:"rate_per_sec"` // over the last second
}

// LoadFinished reports the end of a run's load.
type LoadFinished struct {
	ExperimentID string  `json:"experiment_id"`
	RunID        string  `json:"run_id"`
	Instance     string  `json:"instance"`
	StartMs      int64   `json:"start_ms"`
	EndMs        int64   `json:"end_ms"`
	RecordsSent  int64   `json:"records_sent"`
	Errors       int64   `json:"errors"`
	AchievedRate float64 `json:"achieved_rate"`
	Failed       bool    `json:"failed"`
	Reason       string  `json:"reason,omitempty"`
	// RecordsDelivered is what the broker holds: the input topic's
	// high-water marks summed over partitions after the load, when
	// DeliveredFromBroker (otherwise the acknowledged count).
	RecordsDelivered    int64 `json:"records_delivered"`
	DeliveredFromBroker bool  `json:"delivered_from_broker"`
	// RecordsMissed were due by the schedule and never produced;
	// RecordsBackfilled were produced late to cover an instance's death or
	// restart. Takeovers counts key-range hand-overs after an instance
	// died; Restarts counts instances that resumed their share from a
	// checkpoint.
	RecordsMissed     int64 `json:"records_missed"`
	RecordsBackfilled int64 `json:"records_backfilled"`
	Takeovers         int   `json:"takeovers"`
	Restarts          int   `json:"restarts"`
	// Permanent (v3): the failure would recur on a retry — the generators
	// could not produce the offered rate — so the run is not retried.
	Permanent bool `json:"permanent,omitempty"`
}

// CollectAssign tells energy collectors which targets belong to a run and
// how the run asks them to be measured.
type CollectAssign struct {
	ExperimentID string   `json:"experiment_id"`
	RunID        string   `json:"run_id"`
	Targets      []Target `json:"targets"`
	// Meters is the run's meter configuration (v2); nil in v1 messages,
	// which the collectors measure with their own configuration.
	Meters *CollectMeters `json:"meters,omitempty"`
}

// CollectMeters is what a run asks of the collectors sampling its nodes:
// the spec's meters section.
type CollectMeters struct {
	// IntervalMs is the sampling interval the run asks for. A node shared
	// by several runs is sampled at the finest interval any of them asks.
	IntervalMs int64 `json:"interval_ms"`
	// Source is the local meter asked for: auto, rapl or model.
	Source string `json:"source"`
	// Model overrides the collector's CPU-utilisation power model; nil
	// keeps the node's profile (or its calibrated model).
	Model *CollectModel `json:"model,omitempty"`
}

// CollectModel is a run's CPU-utilisation power model. Per-vCPU watts are
// multiplied by the node's vCPUs and PlatformWatts added; IdleWatts and
// MaxWatts, when MaxWatts > 0, are node totals that replace that profile.
type CollectModel struct {
	IdleWattsPerVCPU float64 `json:"idle_watts_per_vcpu,omitempty"`
	MaxWattsPerVCPU  float64 `json:"max_watts_per_vcpu,omitempty"`
	PlatformWatts    float64 `json:"platform_watts,omitempty"`
	IdleWatts        float64 `json:"idle_watts,omitempty"`
	MaxWatts         float64 `json:"max_watts,omitempty"`
}

// CollectRelease tells energy collectors a run's targets are gone.
type CollectRelease struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
}

func (ExperimentSubmit) MessageType() Type   { return TypeExperimentSubmit }
func (ExperimentCancel) MessageType() Type   { return TypeExperimentCancel }
func (ExperimentState) MessageType() Type    { return TypeExperimentState }
func (RunProvision) MessageType() Type       { return TypeRunProvision }
func (RunProvisioned) MessageType() Type     { return TypeRunProvisioned }
func (RunProvisionFailed) MessageType() Type { return TypeRunProvisionFailed }
func (RunTeardown) MessageType() Type        { return TypeRunTeardown }
func (RunTornDown) MessageType() Type        { return TypeRunTornDown }
func (RunState) MessageType() Type           { return TypeRunState }
func (RunMeasured) MessageType() Type        { return TypeRunMeasured }
func (RunAnalyzed) MessageType() Type        { return TypeRunAnalyzed }
func (LoadStart) MessageType() Type          { return TypeLoadStart }
func (LoadStop) MessageType() Type           { return TypeLoadStop }
func (LoadProgress) MessageType() Type       { return TypeLoadProgress }
func (LoadFinished) MessageType() Type       { return TypeLoadFinished }
func (CollectAssign) MessageType() Type      { return TypeCollectAssign }
func (CollectRelease) MessageType() Type     { return TypeCollectRelease }

func (m ExperimentSubmit) IDs() (string, string)   { return m.ExperimentID, "" }
func (m ExperimentCancel) IDs() (string, string)   { return m.ExperimentID, "" }
func (m ExperimentState) IDs() (string, string)    { return m.ExperimentID, "" }
func (m RunProvision) IDs() (string, string)       { return m.ExperimentID, m.RunID }
func (m RunProvisioned) IDs() (string, string)     { return m.ExperimentID, m.RunID }
func (m RunProvisionFailed) IDs() (string, string) { return m.ExperimentID, m.RunID }
func (m RunTeardown) IDs() (string, string)        { return m.ExperimentID, m.RunID }
func (m RunTornDown) IDs() (string, string)        { return m.ExperimentID, m.RunID }
func (m RunState) IDs() (string, string)           { return m.ExperimentID, m.RunID }
func (m RunMeasured) IDs() (string, string)        { return m.ExperimentID, m.RunID }
func (m RunAnalyzed) IDs() (string, string)        { return m.ExperimentID, m.RunID }
func (m LoadStart) IDs() (string, string)          { return m.ExperimentID, m.RunID }
func (m LoadStop) IDs() (string, string)           { return m.ExperimentID, m.RunID }
func (m LoadProgress) IDs() (string, string)       { return m.ExperimentID, m.RunID }
func (m LoadFinished) IDs() (string, string)       { return m.ExperimentID, m.RunID }
func (m CollectAssign) IDs() (string, string)      { return m.ExperimentID, m.RunID }
func (m CollectRelease) IDs() (string, string)     { return m.ExperimentID, m.RunID }
