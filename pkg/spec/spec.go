// Package spec parses, validates and expands GreenFlow experiment specs: a
// Kubernetes-style YAML document (apiVersion, kind: Experiment, metadata,
// spec) naming the system under test, the UC-3 workload, the factors to
// sweep, repetitions, phases and meters. Unknown fields are errors; every
// problem is reported at once with its field path.
package spec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"gopkg.in/yaml.v3"
)

// APIVersion is the spec version this build reads.
const APIVersion = "greenflow.dev/v1alpha1"

// MaxRunsWithoutConfirm is the sweep size above which submission needs --yes.
const MaxRunsWithoutConfirm = 10000

// MaxRuns is the sweep size no submission may exceed, --yes or not: every
// run is a record the scheduler keeps, and at minutes per run 100,000 runs
// are months of machine time — a larger number is a mistake in the spec.
const MaxRuns = 10 * MaxRunsWithoutConfirm

// MaxRangeValues bounds the values one factor range may generate; it is
// checked before anything is allocated.
const MaxRangeValues = MaxRuns

// Upper bounds of workload sizes: far above what one experiment can
// offer, low enough that a typo cannot make a load generator allocate a
// schedule per sensor until it runs out of memory.
const (
	MaxSensors    = 10_000_000
	MaxRatePerSec = 1e9
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
	Seed        int64               `yaml:"seed,omitempty" json:"seed,omitempty"`   // 0: chosen at expansion and recorded
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

// ModelMeter is the linear CPU-utilisation power model.
type ModelMeter struct {
	IdleWatts float64 `yaml:"idleWatts" json:"idleWatts"`
	MaxWatts  float64 `yaml:"maxWatts" json:"maxWatts"`
}

// ExtraMeter names an additional exporter (deepened by the collector work).
type ExtraMeter struct {
	Kind string `yaml:"kind" json:"kind"`
	URL  string `yaml:"url" json:"url"`
}

// SLOs are the service-level objectives a run must meet to count as
// sustained (Theodolite's lag trend; the original GreenFlow's throughput ratio).
type SLOs struct {
	LagTrendSlope      float64  `yaml:"lagTrendSlope" json:"lagTrendSlope"`           // msg/s of lag growth allowed
	LagWarmup          Duration `yaml:"lagWarmup" json:"lagWarmup"`                   // dropped before the fit
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

// Problems is every validation problem found, each with its field path.
type Problems []string

func (p Problems) Error() string {
	return fmt.Sprintf("%d problem(s) in experiment spec:\n  - %s", len(p), strings.Join(p, "\n  - "))
}

// Parse reads a spec (YAML or JSON), applies defaults and the --set
// overrides (path=value), and validates it. On failure the error is Problems.
//
// The text must hold exactly one experiment: a second YAML document, or
// anything after a JSON value, is a problem — never silently dropped.
func Parse(data []byte, sets []string) (*Experiment, error) {
	root, err := oneDocument(data)
	if err != nil {
		return nil, err
	}
	var probs Problems
	for _, s := range sets {
		path, val, ok := strings.Cut(s, "=")
		if !ok || path == "" {
			probs = append(probs, fmt.Sprintf("--set %q: expected path=value", s))
			continue
		}
		if err := setPath(root.Content[0], strings.Split(path, "."), val); err != nil {
			probs = append(probs, fmt.Sprintf("--set %s: %v", path, err))
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	e := Default()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(&root); err != nil {
		return nil, Problems{fmt.Sprintf("re-encode spec: %v", err)}
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(e); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, Problems(te.Errors)
		}
		return nil, Problems{err.Error()}
	}
	if err := e.Validate(); err != nil {
		var probs Problems
		if errors.As(err, &probs) {
			return nil, withLines(root.Content[0], probs)
		}
		return nil, err
	}
	return e, nil
}

// oneDocument parses data as a single YAML (or JSON) document.
func oneDocument(data []byte) (yaml.Node, error) {
	var root yaml.Node
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		// JSON, or YAML in flow style. When the first value is JSON,
		// nothing but white space may follow it.
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		var first json.RawMessage
		if dec.Decode(&first) == nil {
			if rest := bytes.TrimSpace(trimmed[dec.InputOffset():]); len(rest) > 0 {
				return root, Problems{fmt.Sprintf("a JSON spec must be a single value: %d more bytes follow the first (%q...)",
					len(rest), truncate(string(rest), 20))}
			}
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return root, Problems{"spec is empty"}
		}
		return root, Problems{fmt.Sprintf("not valid YAML: %v", err)}
	}
	if len(root.Content) == 0 {
		return root, Problems{"spec is empty"}
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return root, Problems{fmt.Sprintf("not valid YAML after the first document: %v", err)}
		}
		if len(next.Content) == 1 && next.Content[0].Kind == yaml.ScalarNode && next.Content[0].ShortTag() == "!!null" {
			continue // an empty document ("---" at the end) holds nothing to lose
		}
		return root, Problems{fmt.Sprintf("line %d: a second YAML document: a spec holds one experiment; submit each document on its own", next.Line)}
	}
	return root, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// withLines appends the spec line of each problem's field path, when the
// field is written in the document.
func withLines(root *yaml.Node, probs Problems) Problems {
	out := make(Problems, len(probs))
	for i, p := range probs {
		out[i] = p
		path, _, ok := strings.Cut(p, ": ")
		if !ok {
			continue
		}
		if n := lookup(root, path); n != nil && n.Line > 0 { // a --set value has no line
			out[i] = fmt.Sprintf("line %d: %s", n.Line, p)
		}
	}
	return out
}

// lookup finds the node at a dotted path with [i] indices, e.g.
// spec.factors[0].name; the deepest existing node is returned so a missing
// field points at its parent.
func lookup(n *yaml.Node, path string) *yaml.Node {
	var found *yaml.Node
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			if v, err := strconv.Atoi(part[i+1 : len(part)-1]); err == nil {
				idx = v
			}
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return found
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == name {
				next = n.Content[j+1]
				break
			}
		}
		if next == nil {
			return found
		}
		if idx >= 0 {
			if next.Kind != yaml.SequenceNode || idx >= len(next.Content) {
				return next
			}
			next = next.Content[idx]
		}
		n, found = next, next
	}
	return found
}

// setPath sets (creating mappings as needed) a scalar at path in a mapping node.
func setPath(n *yaml.Node, path []string, val string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s is not a mapping", path[0])
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == path[0] {
			if len(path) == 1 {
				n.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Value: val}
				return nil
			}
			return setPath(n.Content[i+1], path[1:], val)
		}
	}
	child := &yaml.Node{Kind: yaml.ScalarNode, Value: val}
	if len(path) > 1 {
		child = &yaml.Node{Kind: yaml.MappingNode}
		if err := setPath(child, path[1:], val); err != nil {
			return err
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: path[0]}, child)
	return nil
}

// Default returns an experiment with every default filled in.
func Default() *Experiment {
	return &Experiment{
		APIVersion: APIVersion,
		Kind:       "Experiment",
		Spec: Spec{
			RunConfig: RunConfig{
				SUT:      SUT{Template: "uc3-go", Backend: "local"},
				Workload: Workload{Sensors: 100, PeriodMs: 1000, Value: 10, Format: "avro", SchemaID: 1},
				Kafka:    Kafka{Partitions: 4, InputTopic: "input", OutputTopic: "output"},
				Phases: Phases{Baseline: Duration{10 * time.Second}, Warmup: Duration{10 * time.Second},
					Measure: Duration{60 * time.Second}, Cooldown: Duration{5 * time.Second}},
				Meters: Meters{Source: "auto", Model: ModelMeter{IdleWatts: 0.74, MaxWatts: 3.5}, Sample: Duration{time.Second}},
			},
			Repetitions: 1,
			Order:       "random",
			SLOs:        SLOs{LagTrendSlope: 2000, LagWarmup: Duration{60 * time.Second}, MinThroughputRatio: 0.95},
		},
	}
}

// Templates known to the provisioner.
var Templates = map[string]bool{"uc3-go": true, "command": true, "uc3-kstreams": true, "uc3-flink": true, "manifest": true}

// Validate reports every problem with its field path.
func (e *Experiment) Validate() error {
	var p Problems
	add := func(path, format string, args ...any) { p = append(p, path+": "+fmt.Sprintf(format, args...)) }
	if e.APIVersion != APIVersion {
		add("apiVersion", "got %q, expected %q", e.APIVersion, APIVersion)
	}
	if e.Kind != "Experiment" {
		add("kind", "got %q, expected Experiment", e.Kind)
	}
	if e.Metadata.Name == "" {
		add("metadata.name", "required")
	} else if !validName(e.Metadata.Name) {
		add("metadata.name", "%q: expected lower-case letters, digits and '-' (at most 63)", e.Metadata.Name)
	}
	s := e.Spec
	p = append(p, s.RunConfig.problems("spec.")...)
	if s.Repetitions < 1 || s.Repetitions > 1000 {
		add("spec.repetitions", "got %d, expected 1 to 1000", s.Repetitions)
	}
	if s.Order != "random" && s.Order != "sequential" {
		add("spec.order", "got %q, expected random or sequential", s.Order)
	}
	// Every float outside the run config (which problems checks) must be
	// finite: NaN compares false with every bound below, so it would pass
	// them all.
	p = append(p, finiteProblems(reflect.ValueOf(e).Elem(), "")...)
	// First the shape of every factor, then the size of the sweep, and
	// only then each value's run config: that costs a config per value, so
	// it is done for sweeps that are allowed at all.
	seen := map[string]bool{}
	shaped := make([]bool, len(s.Factors))
	size := 1 // of the grid of the well-shaped factors, saturated
	for i, f := range s.Factors {
		path := fmt.Sprintf("spec.factors[%d]", i)
		if f.Name == "" {
			add(path+".name", "required")
			continue
		}
		if seen[f.Name] {
			add(path+".name", "%q swept twice", f.Name)
		}
		seen[f.Name] = true
		if f.Range != nil && len(f.Values) == 0 {
			if probs := f.Range.problems(path + ".range"); len(probs) > 0 {
				p = append(p, probs...)
				continue
			}
		}
		k, err := f.size()
		if err != nil {
			add(path, "%v", err)
			continue
		}
		shaped[i] = true
		size = min(satMul(size, k), MaxRuns+1)
	}
	allShaped := !slices.Contains(shaped, false)
	// Every path to the scheduler (the API, a raw experiment.submit, a
	// trigger) parses the spec here, so the cap holds for all of them.
	n := satMul(size+len(s.Include), max(s.Repetitions, 1))
	if allShaped {
		var err error
		if n, err = e.Count(); err != nil {
			add("spec.factors", "%v", err)
			return p
		}
	}
	if n > MaxRuns {
		add("spec.factors", "the sweep expands to %s%d runs (with repetitions; exclusions count only when the full grid is at most %d), more than the %d an experiment may have: split it",
			map[bool]string{true: "", false: "at least "}[allShaped], n, MaxRuns, MaxRuns)
		return p
	}
	for i, f := range s.Factors {
		if !shaped[i] {
			continue
		}
		path := fmt.Sprintf("spec.factors[%d]", i)
		vals, err := f.Expand()
		if err != nil {
			add(path, "%v", err)
			continue
		}
		// Each value must produce a valid run config.
		for _, v := range vals {
			rc, err := s.RunConfig.With(map[string]string{f.Name: v})
			if err != nil {
				add(path, "value %q: %v", v, err)
				break
			}
			if probs := rc.problems(""); len(probs) > 0 {
				add(path, "value %q makes the run invalid: %s", v, strings.Join(probs, "; "))
				break
			}
		}
	}
	for i, inc := range s.Include {
		path := fmt.Sprintf("spec.include[%d]", i)
		if len(inc) == 0 {
			add(path, "empty combination")
			continue
		}
		rc, err := s.RunConfig.With(inc)
		if err != nil {
			add(path, "%v", err)
		} else if probs := rc.problems(""); len(probs) > 0 {
			add(path, "makes the run invalid: %s", strings.Join(probs, "; "))
		}
	}
	for i, exc := range s.Exclude {
		path := fmt.Sprintf("spec.exclude[%d]", i)
		if len(exc) == 0 {
			add(path, "empty combination")
		}
		for k := range exc {
			if !seen[k] {
				add(path, "%q is not a swept factor", k)
			}
		}
	}
	if s.SLOs.LagTrendSlope < 0 {
		add("spec.slos.lagTrendSlope", "got %g, expected zero or more", s.SLOs.LagTrendSlope)
	}
	if s.SLOs.MinThroughputRatio < 0 || s.SLOs.MinThroughputRatio > 1 {
		add("spec.slos.minThroughputRatio", "got %g, expected 0 to 1", s.SLOs.MinThroughputRatio)
	}
	if q := s.Search; q != nil {
		if len(s.Factors) > 0 {
			add("spec.search", "cannot be combined with factors: search one configuration per experiment")
		}
		if q.Start <= 0 {
			add("spec.search.start", "got %g, expected a positive rate (msg/s)", q.Start)
		}
		if q.Max < q.Start || q.Max > MaxRatePerSec {
			add("spec.search.max", "got %g, expected at least start (%g) and at most %g msg/s", q.Max, q.Start, MaxRatePerSec)
		}
		if q.Tolerance <= 0 || q.Tolerance >= 1 {
			add("spec.search.tolerance", "got %g, expected between 0 and 1 (e.g. 0.05)", q.Tolerance)
		}
	}
	if t := s.Trigger; t != nil {
		switch {
		case t.Subject == "" && t.Cron == "":
			add("spec.trigger", "give subject or cron")
		case t.Subject != "" && t.Cron != "":
			add("spec.trigger", "give subject or cron, not both")
		case t.Subject != "" && (strings.HasPrefix(t.Subject, "gf.") || strings.ContainsAny(t.Subject, " \t")):
			add("spec.trigger.subject", "%q: expected a NATS subject outside gf.> (GreenFlow's own)", t.Subject)
		case t.Cron != "":
			if _, err := ParseCron(t.Cron); err != nil {
				add("spec.trigger.cron", "%v", err)
			}
		}
		if t.Cron != "" && len(t.Bind) > 0 {
			add("spec.trigger.bind", "only subject triggers carry event values")
		}
	}
	if len(p) > 0 {
		return p
	}
	return nil
}

func (rc RunConfig) problems(prefix string) Problems {
	var p Problems
	add := func(path, format string, args ...any) { p = append(p, prefix+path+": "+fmt.Sprintf(format, args...)) }
	if !Templates[rc.SUT.Template] {
		add("sut.template", "unknown template %q, expected one of %s", rc.SUT.Template, keys(Templates))
	}
	if rc.SUT.Template == "command" && len(rc.SUT.Command) == 0 {
		add("sut.command", "required for template command")
	}
	if rc.SUT.Backend != "local" && rc.SUT.Backend != "kubernetes" {
		add("sut.backend", "got %q, expected local or kubernetes", rc.SUT.Backend)
	}
	p = append(p, rc.SUT.kubernetesProblems(prefix)...)
	p = append(p, finiteProblems(reflect.ValueOf(rc), prefix)...)
	w := rc.Workload
	if w.Sensors <= 0 || w.Sensors > MaxSensors {
		add("workload.sensors", "got %d, expected a positive number of sensors (at most %d)", w.Sensors, MaxSensors)
	}
	if w.RatePerSec < 0 || w.RatePerSec > MaxRatePerSec {
		add("workload.ratePerSec", "got %g, expected a positive rate (at most %g msg/s)", w.RatePerSec, MaxRatePerSec)
	}
	if w.RatePerSec == 0 && w.PeriodMs <= 0 {
		add("workload.periodMs", "got %d, expected a positive period (or set ratePerSec)", w.PeriodMs)
	}
	if w.Format != "avro" && w.Format != "json" {
		add("workload.format", "got %q, expected avro or json", w.Format)
	}
	if rc.Kafka.Partitions < 1 || rc.Kafka.Partitions > 10000 {
		add("kafka.partitions", "got %d, expected 1 to 10000", rc.Kafka.Partitions)
	}
	ph := rc.Phases
	for name, d := range map[string]time.Duration{"baseline": ph.Baseline.Duration, "warmup": ph.Warmup.Duration, "cooldown": ph.Cooldown.Duration} {
		if d < 0 {
			add("phases."+name, "got %s, expected zero or more", d)
		}
	}
	if ph.Measure.Duration <= 0 {
		add("phases.measure", "got %s, expected a positive duration", ph.Measure.Duration)
	}
	m := rc.Meters
	if m.Source != "auto" && m.Source != "rapl" && m.Source != "model" {
		add("meters.source", "got %q, expected auto, rapl or model", m.Source)
	}
	if m.Model.IdleWatts < 0 || m.Model.MaxWatts < m.Model.IdleWatts {
		add("meters.model", "idleWatts %g and maxWatts %g: expected 0 <= idleWatts <= maxWatts", m.Model.IdleWatts, m.Model.MaxWatts)
	}
	if m.Sample.Duration < 100*time.Millisecond {
		add("meters.interval", "got %s, expected at least 100ms", m.Sample.Duration)
	}
	return p
}

// Rate is the total offered msg/s of the workload.
func (w Workload) Rate() float64 {
	if w.RatePerSec > 0 {
		return w.RatePerSec
	}
	return float64(w.Sensors) * 1000 / float64(w.PeriodMs)
}

func validName(s string) bool {
	if len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func keys(m map[string]bool) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// Expand returns the factor's values as strings.
func (f Factor) Expand() ([]string, error) {
	switch {
	case len(f.Values) > 0 && f.Range != nil:
		return nil, fmt.Errorf("give values or range, not both")
	case len(f.Values) > 0:
		return f.Values, nil
	case f.Range != nil:
		r := *f.Range
		if probs := r.problems("range"); len(probs) > 0 {
			return nil, probs
		}
		return r.values()
	default:
		return nil, fmt.Errorf("no values: give values or range")
	}
}

// problems checks a range before anything is generated from it: finite
// bounds and step, a positive step, to >= from, at most MaxRangeValues
// values, and a step large enough to change the values (a step below the
// precision of a float64 near from would repeat one value).
func (r Range) problems(path string) Problems {
	var p Problems
	add := func(field, format string, args ...any) {
		p = append(p, path+"."+field+": "+fmt.Sprintf(format, args...))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"from", r.From}, {"to", r.To}, {"step", r.Step}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			add(f.name, "got %g, expected a finite number", f.v)
		}
	}
	if len(p) > 0 {
		return p
	}
	if r.Step <= 0 {
		add("step", "got %g, expected a positive step", r.Step)
	}
	if r.To < r.From {
		add("to", "got %g, expected at least from (%g)", r.To, r.From)
	}
	if len(p) > 0 {
		return p
	}
	// In floating point, before any allocation: the span may overflow
	// to +Inf, and a tiny step makes the quotient huge.
	if span := (r.To - r.From) / r.Step; math.IsInf(span, 0) || span >= MaxRangeValues {
		add("step", "from %g to %g by %g yields more than %d values", r.From, r.To, r.Step, MaxRangeValues)
	} else if r.From+r.Step == r.From || r.To-r.Step == r.To {
		add("step", "got %g, too small to change a value near %g (float64 precision)", r.Step, r.From)
	}
	return p
}

// values generates a checked range's values, in increasing order.
func (r Range) values() ([]string, error) {
	n := int((r.To-r.From)/r.Step+1e-9) + 1
	out := make([]string, 0, n)
	prev := math.Inf(-1)
	for i := 0; i < n; i++ {
		v := r.From + float64(i)*r.Step
		if v <= prev {
			return nil, Problems{fmt.Sprintf("range.step: got %g, too small to change a value near %g (float64 precision)", r.Step, v)}
		}
		prev = v
		out = append(out, strconv.FormatFloat(v, 'f', -1, 64))
	}
	return out, nil
}

// finiteProblems reports every float64 under v that is NaN or infinite,
// by its spec path (YAML names, [i] indices, inline structs flattened).
// The run config inlined in Spec is left to RunConfig.problems, and ranges
// to Range.problems, so each field is reported once.
func finiteProblems(v reflect.Value, path string) Problems {
	var p Problems
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			p = append(p, fmt.Sprintf("%s: got %g, expected a finite number", path, f))
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			p = append(p, finiteProblems(v.Elem(), path)...)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			p = append(p, finiteProblems(v.Index(i), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			p = append(p, finiteProblems(iter.Value(), fmt.Sprintf("%s.%v", path, iter.Key()))...)
		}
	case reflect.Struct:
		t := v.Type()
		if t == reflect.TypeFor[Range]() {
			return nil
		}
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if strings.Contains(opts, "inline") {
				if sf.Type == reflect.TypeFor[RunConfig]() && t == reflect.TypeFor[Spec]() {
					continue
				}
				p = append(p, finiteProblems(v.Field(i), path)...)
				continue
			}
			if name == "" || name == "-" {
				name = sf.Name
			}
			child := name
			if path != "" {
				child = strings.TrimSuffix(path, ".") + "." + name
			}
			p = append(p, finiteProblems(v.Field(i), child)...)
		}
	}
	return p
}

// With returns a copy of rc with factor values applied by path. Each value
// is decoded as the YAML scalar it would be in the document (so "10" is an
// int, "1s" a duration, "true" a bool), straight into the field the path
// names — no re-encoding of the whole config, so a 100,000-value sweep
// validates and expands in well under a second. Pointers and maps on the
// path are created when absent; an unknown field is an error, as in the
// document.
func (rc RunConfig) With(values map[string]string) (RunConfig, error) {
	if len(values) == 0 {
		return rc, nil
	}
	out := deepCopy(reflect.ValueOf(rc)).Interface().(RunConfig)
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := setField(reflect.ValueOf(&out).Elem(), strings.Split(k, "."), values[k]); err != nil {
			return rc, err
		}
	}
	return out, nil
}

// setField sets the field at path (YAML names) under v to the scalar val.
func setField(v reflect.Value, path []string, val string) error {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return setField(v.Elem(), path, val)
	case reflect.Struct:
		f, ok := fieldByYAMLName(v, path[0])
		if !ok {
			return fmt.Errorf("field %s not found in type %s", path[0], v.Type())
		}
		if len(path) == 1 {
			return decodeScalar(f, val)
		}
		return setField(f, path[1:], val)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("%s: cannot set a key of %s", path[0], v.Type())
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		key := reflect.ValueOf(path[0]).Convert(v.Type().Key())
		elem := reflect.New(v.Type().Elem()).Elem()
		if cur := v.MapIndex(key); cur.IsValid() {
			elem.Set(cur)
		}
		var err error
		if len(path) == 1 {
			err = decodeScalar(elem, val)
		} else {
			err = setField(elem, path[1:], val)
		}
		if err != nil {
			return err
		}
		v.SetMapIndex(key, elem)
		return nil
	default:
		return fmt.Errorf("%s: cannot set a field inside %s (not a mapping)", path[0], v.Type())
	}
}

// fieldByYAMLName finds a struct field by its YAML name, looking into
// inline fields.
func fieldByYAMLName(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			if f, ok := fieldByYAMLName(v.Field(i), name); ok {
				return f, true
			}
			continue
		}
		if tag == "" {
			tag = strings.ToLower(sf.Name)
		}
		if tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// decodeScalar decodes val as a plain YAML scalar into f, replacing what
// was there (null leaves the zero value, as a null in the document does).
func decodeScalar(f reflect.Value, val string) error {
	f.Set(reflect.Zero(f.Type()))
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: val}
	if err := n.Decode(f.Addr().Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				msgs[i] = internalLine.ReplaceAllString(m, "")
			}
			return fmt.Errorf("%s", strings.Join(msgs, "; "))
		}
		return internalLineErr(err)
	}
	return nil
}

// internalLineErr drops the meaningless "line 0: " of an error about a
// node built here rather than read from the user's document.
func internalLineErr(err error) error {
	return errors.New(internalLine.ReplaceAllString(err.Error(), ""))
}

// deepCopy copies v, its pointers, maps and slices included, so a run's
// config shares nothing with the spec or with other runs.
func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Type().Elem())
		n.Elem().Set(deepCopy(v.Elem()))
		return n
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			n.SetMapIndex(iter.Key(), deepCopy(iter.Value()))
		}
		return n
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(deepCopy(v.Index(i)))
		}
		return n
	case reflect.Struct:
		n := reflect.New(v.Type()).Elem()
		n.Set(v)
		for i := 0; i < v.NumField(); i++ {
			if n.Field(i).CanSet() {
				n.Field(i).Set(deepCopy(v.Field(i)))
			}
		}
		return n
	default:
		return v
	}
}

// internalLine matches the "line N: " yaml.v3 puts before a decode error.
var internalLine = regexp.MustCompile(`^line \d+: `)

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

// Count is the number of runs the spec expands to. It allocates nothing
// for a grid larger than MaxRuns: exclusions cannot bring such a grid
// under the cap (they are not enumerated), so it counts in full.
func (e *Experiment) Count() (int, error) {
	reps := max(e.Spec.Repetitions, 1)
	n := 1
	for _, f := range e.Spec.Factors {
		k, err := f.size()
		if err != nil {
			return 0, fmt.Errorf("factor %s: %w", f.Name, err)
		}
		n *= k
		if n > MaxRuns {
			return satMul(n+len(e.Spec.Include), reps), nil
		}
	}
	if len(e.Spec.Include)+len(e.Spec.Exclude) > 0 {
		if n+len(e.Spec.Include) > MaxRuns && len(e.Spec.Exclude) == 0 {
			return satMul(n+len(e.Spec.Include), reps), nil
		}
		g, err := e.grid()
		if err != nil {
			return 0, err
		}
		n = len(g)
	}
	return satMul(n, reps), nil
}

// satMul multiplies two non-negative counts, saturating instead of
// overflowing.
func satMul(a, b int) int {
	if a != 0 && b > math.MaxInt/2/a {
		return math.MaxInt / 2
	}
	return a * b
}

// size is the number of values of a factor, without generating them.
func (f Factor) size() (int, error) {
	switch {
	case len(f.Values) > 0 && f.Range != nil:
		return 0, fmt.Errorf("give values or range, not both")
	case len(f.Values) > 0:
		return len(f.Values), nil
	case f.Range != nil:
		if probs := f.Range.problems("range"); len(probs) > 0 {
			return 0, probs
		}
		return int((f.Range.To-f.Range.From)/f.Range.Step+1e-9) + 1, nil
	default:
		return 0, fmt.Errorf("no values: give values or range")
	}
}

// grid is the full factor grid, less exclusions, plus inclusions.
func (e *Experiment) grid() ([]map[string]string, error) {
	grid := []map[string]string{{}}
	for _, f := range e.Spec.Factors {
		vals, err := f.Expand()
		if err != nil {
			return nil, fmt.Errorf("factor %s: %w", f.Name, err)
		}
		next := make([]map[string]string, 0, len(grid)*len(vals))
		for _, g := range grid {
			for _, v := range vals {
				m := make(map[string]string, len(g)+1)
				for k, x := range g {
					m[k] = x
				}
				m[f.Name] = v
				next = append(next, m)
			}
		}
		grid = next
	}
	if len(e.Spec.Exclude) > 0 {
		kept := grid[:0]
		for _, g := range grid {
			if !matchesAny(g, e.Spec.Exclude) {
				kept = append(kept, g)
			}
		}
		grid = kept
	}
	seen := map[string]bool{}
	for _, g := range grid {
		seen[comboKey(g)] = true
	}
	for _, inc := range e.Spec.Include {
		if !seen[comboKey(inc)] {
			seen[comboKey(inc)] = true
			grid = append(grid, inc)
		}
	}
	return grid, nil
}

func matchesAny(combo map[string]string, filters []map[string]string) bool {
	for _, f := range filters {
		all := true
		for k, v := range f {
			if combo[k] != v {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// Expand produces the runs: the factor grid (with inclusions and exclusions)
// times repetitions, each with a deterministic id (experimentID-rNNNN,
// numbered in execution order), its concrete config and a config hash. The
// order is randomised with the spec's seed (or seed, when the spec has none)
// — repetitions interleaved so drift does not bias one configuration — or
// kept sequential on request.
func (e *Experiment) Expand(experimentID string, seed int64) (Plan, error) {
	if e.Spec.Seed != 0 {
		seed = e.Spec.Seed
	}
	grid, err := e.grid()
	if err != nil {
		return Plan{}, err
	}
	if q := e.Spec.Search; q != nil {
		grid = []map[string]string{{"workload.ratePerSec": strconv.FormatFloat(q.Start, 'f', -1, 64)}}
	}
	type item struct {
		combo map[string]string
		rep   int
	}
	var items []item
	for rep := 0; rep < e.Spec.Repetitions; rep++ {
		for _, g := range grid {
			items = append(items, item{g, rep})
		}
	}
	if e.Spec.Order == "random" {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
		// Shuffle within each repetition block: every configuration runs once
		// before any runs twice, and drift spreads over all of them.
		block := len(grid)
		for start := 0; start < len(items); start += block {
			b := items[start : start+block]
			rng.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
		}
	}
	cache := map[string]RunConfig{}
	plan := Plan{Seed: seed, Runs: make([]Run, 0, len(items))}
	for i, it := range items {
		k := comboKey(it.combo)
		rc, ok := cache[k]
		if !ok {
			var err error
			rc, err = e.Spec.RunConfig.With(it.combo)
			if err != nil {
				return Plan{}, err
			}
			cache[k] = rc
		}
		plan.Runs = append(plan.Runs, Run{
			ID: fmt.Sprintf("%s-r%04d", experimentID, i), Index: i, Repetition: it.rep,
			Factors: it.combo, Config: rc, ConfigHash: Hash(rc),
		})
	}
	return plan, nil
}

func comboKey(m map[string]string) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k+"="+m[k])
	}
	sort.Strings(ks)
	return strings.Join(ks, "\x00")
}

// Hash is a stable short hash of a run config (its canonical JSON).
func Hash(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (s SUT) kubernetesProblems(prefix string) Problems {
	var p Problems
	add := func(path, format string, args ...any) {
		p = append(p, prefix+"sut."+path+": "+fmt.Sprintf(format, args...))
	}
	k := s.Kubernetes
	switch {
	case s.Backend == "local":
		if s.Template == "manifest" || s.Template == "uc3-kstreams" || s.Template == "uc3-flink" {
			add("template", "template %s runs on backend kubernetes only", s.Template)
		}
		return p
	case s.Backend != "kubernetes":
		return p
	case s.Template == "command":
		add("template", "template command runs on backend local only")
	case k == nil:
		add("kubernetes", "required for backend kubernetes (at least kubernetes.image)")
		return p
	}
	if k == nil {
		return p
	}
	if s.Template == "manifest" {
		if strings.TrimSpace(k.Manifest) == "" {
			add("kubernetes.manifest", "required for template manifest (the objects to apply, as a Go template)")
		}
	} else {
		if k.Image == "" {
			add("kubernetes.image", "required for template %s: the image to run (for example %s)", s.Template, exampleImages[s.Template])
		}
		if k.Manifest != "" {
			add("kubernetes.manifest", "only used by template manifest, not %s", s.Template)
		}
	}
	switch k.ImagePullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		add("kubernetes.imagePullPolicy", "got %q, expected Always, IfNotPresent or Never", k.ImagePullPolicy)
	}
	if k.Replicas < 0 {
		add("kubernetes.replicas", "got %d, expected at least 1 (0 means 1)", k.Replicas)
	}
	for name, q := range map[string]string{"cpu": k.Resources.CPU, "memory": k.Resources.Memory} {
		if q == "" {
			continue
		}
		if _, err := resource.ParseQuantity(q); err != nil {
			add("kubernetes.resources."+name, "got %q, expected a Kubernetes quantity such as 500m, 1 or 4Gi", q)
		}
	}
	switch k.Placement.Strategy {
	case "", "any", "spread", "consolidate":
	default:
		add("kubernetes.placement.strategy", "got %q, expected any, spread or consolidate", k.Placement.Strategy)
	}
	if k.Placement.Nodes < 0 {
		add("kubernetes.placement.nodes", "got %d, expected a number of nodes (0: as many as needed)", k.Placement.Nodes)
	}
	if k.Placement.Nodes > 0 && (k.Placement.Strategy == "" || k.Placement.Strategy == "any") {
		add("kubernetes.placement.nodes", "needs strategy spread or consolidate")
	}
	if k.ReadyTimeout.Duration < 0 {
		add("kubernetes.readyTimeout", "got %s, expected a positive duration", k.ReadyTimeout.Duration)
	}
	return p
}

var exampleImages = map[string]string{
	"uc3-go":       "ghcr.io/<you>/greenflow-uc3-processor (ko build ./services/uc3-processor)",
	"uc3-kstreams": "ghcr.io/cau-se/theodolite-uc3-kstreams-app:latest",
	"uc3-flink":    "ghcr.io/cau-se/theodolite-uc3-flink:latest",
}
