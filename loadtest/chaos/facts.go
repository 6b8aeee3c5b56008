package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// kvExperiment is the part of the scheduler's experiment record the suite
// reads (its own copy: the scheduler's types are internal to it).
type kvExperiment struct {
	ID     string   `json:"id"`
	State  string   `json:"state"`
	Reason string   `json:"reason"`
	RunIDs []string `json:"run_ids"`
}

// kvRun is the part of the scheduler's run record the suite reads.
type kvRun struct {
	ExperimentID string            `json:"experiment_id"`
	RunID        string            `json:"run_id"`
	Factors      map[string]string `json:"factors"`
	ConfigHash   string            `json:"config_hash"`
	State        string            `json:"state"`
	Reason       string            `json:"reason"`
	Phases       []events.Phase    `json:"phases"`
	Targets      []events.Target   `json:"targets"`
	RecordsSent  int64             `json:"records_sent"`
	CreatedMs    int64             `json:"created_ms"`
	Attempt      int               `json:"attempt"`
	RetryOf      string            `json:"retry_of"`
	RetriedAs    string            `json:"retried_as"`
	Config       struct {
		Workload struct {
			Sensors  int `json:"sensors"`
			PeriodMs int `json:"periodMs"`
		} `json:"workload"`
		Kafka struct {
			InputTopic  string `json:"inputTopic"`
			OutputTopic string `json:"outputTopic"`
		} `json:"kafka"`
	} `json:"config"`
}

func (r kvRun) phase(name string) (events.Phase, bool) {
	for _, p := range r.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return events.Phase{}, false
}

// phaseAt names the phase a moment (ms) fell in.
func (r kvRun) phaseAt(ms int64) string {
	for _, p := range r.Phases {
		if ms >= p.StartMs && (p.EndMs == 0 || ms < p.EndMs) {
			return p.Name
		}
	}
	if n := len(r.Phases); n > 0 && ms >= r.Phases[n-1].EndMs {
		return r.State
	}
	return "before provisioning"
}

// KV reads the scheduler's bucket from outside.
type KV struct{ js jetstream.JetStream }

func (k KV) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	return k.js.KeyValue(ctx, bus.BucketScheduler)
}

func (k KV) get(ctx context.Context, key string, v any) error {
	kv, err := k.bucket(ctx)
	if err != nil {
		return fmt.Errorf("open kv %s: %w", bus.BucketScheduler, err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// Experiment reads an experiment record.
func (k KV) Experiment(ctx context.Context, id string) (kvExperiment, error) {
	var e kvExperiment
	return e, k.get(ctx, "exp."+id, &e)
}

// Run reads a run record.
func (k KV) Run(ctx context.Context, id string) (kvRun, error) {
	var r kvRun
	return r, k.get(ctx, "run."+id, &r)
}

// SeriesFacts is one sample series of a run's target in its window.
type SeriesFacts struct {
	Key      string         `json:"key"`  // node/scope/target/zone
	Role     string         `json:"role"` // node | sut
	Coverage SeriesCoverage `json:"coverage"`
	// HoleConfirmed: a second query found no row covering the longest hole.
	HoleConfirmed bool    `json:"hole_confirmed,omitempty"`
	EnergyJ       float64 `json:"energy_j"`
}

// RunFacts is everything the suite learnt about one run, from outside the
// services: the scheduler's KV, ClickHouse, the broker, /proc and the bus.
type RunFacts struct {
	ExperimentID string            `json:"experiment_id"`
	RunID        string            `json:"run_id"`
	Slot         int               `json:"slot"`
	Role         string            `json:"role"` // reference | chaos | retry
	Config       string            `json:"config"`
	Factors      map[string]string `json:"factors"`
	State        string            `json:"state"`
	Reason       string            `json:"reason,omitempty"`
	Attempt      int               `json:"attempt,omitempty"`
	RetryOf      string            `json:"retry_of,omitempty"`
	RetriedAs    string            `json:"retried_as,omitempty"`
	Flags        []string          `json:"flags,omitempty"`
	// AcceptedFlags are flags the segment expects of every run (the kube
	// segment's target_unmeasured: pods that are API objects have no
	// energy); they are listed, not held against the run.
	AcceptedFlags []string `json:"accepted_flags,omitempty"`
	Invalid       bool     `json:"invalid,omitempty"`
	// Bound is how long the run's experiment had to finish; StuckConfirmed
	// that a second read of KV still showed the run unfinished.
	Bound          time.Duration `json:"bound_ns"`
	StuckConfirmed bool          `json:"stuck_confirmed,omitempty"`

	MeasureStartMs int64          `json:"measure_start_ms"`
	MeasureEndMs   int64          `json:"measure_end_ms"`
	Phases         []events.Phase `json:"phases"`
	States         []StateSeen    `json:"states_seen"`

	// Metrics are the compared values (see the M* names), only those known.
	Metrics map[string]float64 `json:"metrics"`
	// Unknown says why a metric could not be measured.
	Unknown map[string]string  `json:"unknown,omitempty"`
	Results map[string]float64 `json:"results,omitempty"` // the run-scope result rows

	Topics TopicCounts   `json:"topics"`
	Own    *OwnMeter     `json:"own_meter,omitempty"`
	SUT    SUTLife       `json:"sut"`
	Series []SeriesFacts `json:"series"`

	DupSamples             int64 `json:"dup_samples"`
	DupSamplesConfirmed    int64 `json:"dup_samples_confirmed"`
	DupRunMetrics          int64 `json:"dup_run_metrics"`
	DupRunMetricsConfirmed int64 `json:"dup_run_metrics_confirmed"`
	DupResults             int64 `json:"dup_results"`
	DupResultsConfirmed    int64 `json:"dup_results_confirmed"`

	// Filled in by the judgement against the undisturbed runs.
	RecordsLost int64       `json:"records_lost"`
	SamplesLost int64       `json:"samples_lost"`
	Violations  []Violation `json:"violations,omitempty"`
	// Extra are the violations found around the run rather than in its
	// facts (leftovers after it, a control that could not complete); a
	// re-judgement keeps them.
	Extra []Violation `json:"extra_violations,omitempty"`
	// Kube is what the cluster and the provisioner's reports showed of a
	// kubernetes run (segment kube).
	Kube *KubeRunFacts `json:"kube,omitempty"`
}

// Pressure is the CPU pressure of the run's window (-1 unknown).
func (r RunFacts) Pressure() float64 {
	if r.Own == nil {
		return -1
	}
	return r.Own.CPUPressure
}

// WindowS is the measured window's length in seconds.
func (r RunFacts) WindowS() float64 { return float64(r.MeasureEndMs-r.MeasureStartMs) / 1000 }

// Gatherer collects RunFacts.
type Gatherer struct {
	KV         KV
	Store      *store.Store
	Events     *EventLog
	Pids       *PidWatch
	Topics     *TopicWatch
	IntervalMs int64
	Model      Model
	// AcceptFlags are moved from a run's Flags to its AcceptedFlags (both
	// the run.analyzed name and the result row's flag_<name>).
	AcceptFlags []string
	// SUTUnmeasured: the SUT's targets are expected to have no samples
	// (pods that are API objects), so only the node series are checked.
	SUTUnmeasured bool
}

// Gather collects the facts of one run after its experiment ended (or its
// bound passed).
func (g *Gatherer) Gather(ctx context.Context, runID string) (RunFacts, error) {
	r, err := g.KV.Run(ctx, runID)
	if err != nil {
		return RunFacts{RunID: runID}, err
	}
	f := RunFacts{ExperimentID: r.ExperimentID, RunID: r.RunID, Config: r.Factors["workload.sensors"], Factors: r.Factors,
		State: r.State, Reason: r.Reason, Attempt: r.Attempt, RetryOf: r.RetryOf, RetriedAs: r.RetriedAs, Phases: r.Phases,
		States: g.Events.States(runID), Metrics: map[string]float64{}, Unknown: map[string]string{}}
	if f.Config == "" {
		f.Config = fmt.Sprint(r.Config.Workload.Sensors)
	}
	if mp, ok := r.phase("measuring"); ok && mp.EndMs > mp.StartMs {
		f.MeasureStartMs, f.MeasureEndMs = mp.StartMs, mp.EndMs
	}
	if a, ok := g.Events.Analyzed(runID); ok {
		f.Flags = append(f.Flags, a.Flags...)
		f.Invalid = a.Invalid
	}
	if life, ok := g.Pids.Life(runID); ok {
		f.SUT = life
		if life.DiedAtMs > 0 {
			f.SUT.StateAtDeath = r.phaseAt(life.DiedAtMs)
			// Found gone only after teardown began: that may be the
			// teardown itself, so it is not held against the run.
			if tp, ok := r.phase("teardown"); ok && life.DiedAtMs >= tp.StartMs {
				f.SUT.DiedAtMs, f.SUT.DeathConfirmed, f.SUT.StateAtDeath = 0, false, ""
			}
		}
	}
	if err := g.results(ctx, &f); err != nil {
		return f, err
	}
	if len(g.AcceptFlags) > 0 {
		var kept []string
		for _, fl := range f.Flags {
			if slices.Contains(g.AcceptFlags, strings.TrimPrefix(fl, "flag_")) {
				f.AcceptedFlags = append(f.AcceptedFlags, fl)
			} else {
				kept = append(kept, fl)
			}
		}
		f.Flags = kept
	}
	if err := g.duplicates(ctx, &f, r); err != nil {
		return f, err
	}
	if f.MeasureEndMs == 0 {
		return f, nil // never measured: nothing to compare
	}
	w := f.WindowS()
	in, out := topicName(r.Config.Kafka.InputTopic, "input", runID), topicName(r.Config.Kafka.OutputTopic, "output", runID)
	f.Topics = g.Topics.Counts(in, out, f.MeasureStartMs, f.MeasureEndMs)
	if f.Topics.InputComplete {
		f.Metrics[MDelivered] = float64(f.Topics.InputInWindow) / w
	} else {
		f.Unknown[MDelivered] = f.Topics.IncompleteNotes
	}
	if f.Topics.InputHWMEdges {
		f.Metrics[MDelivered2] = float64(f.Topics.InputHWMDelta) / w
	} else {
		f.Unknown[MDelivered2] = "no high-water mark samples around both window edges"
	}
	if f.Topics.OutputHWMEdges {
		f.Metrics[MOutput] = float64(f.Topics.OutputHWMDelta) / w
	} else {
		f.Unknown[MOutput] = "no output high-water mark samples around both window edges"
	}
	if f.Topics.OutputComplete && f.Topics.OutputMaxHWM > 0 {
		f.Metrics[MOutput2] = float64(f.Topics.OutputArrivals) / w
	} else {
		f.Unknown[MOutput2] = "the suite did not read the whole output topic"
	}
	if ev, ok := f.Results["events"]; ok && f.Topics.InputHWMEdges && f.Topics.InputHWMDelta > 0 {
		f.Metrics[MReported] = ev / float64(f.Topics.InputHWMDelta)
	}
	if a, ok := g.Events.Analyzed(runID); ok && f.Topics.InputComplete && f.Topics.InputInWindow > 0 {
		f.Metrics[MReported2] = float64(a.Events) / float64(f.Topics.InputInWindow)
	}
	own, haveOwn := g.Pids.Measure(runID, f.MeasureStartMs, f.MeasureEndMs, g.Model)
	if haveOwn {
		f.Own = &own
		f.Metrics[MSUTCPU] = own.SUTCPUs
		f.Metrics[MOwnNodePow] = own.NodeJ / w
	} else {
		f.Unknown[MSUTCPU] = "the suite's own meter did not cover the window"
	}
	if d, ok := f.Results["duration_s"]; ok && d > 0 {
		if j, ok := f.Results["sut_energy_j"]; ok {
			f.Metrics[MSUTPower] = j / d
			if haveOwn && own.SUTJ > 0 {
				f.Metrics[MSUTEnergy] = j / own.SUTJ
			}
		}
		if j, ok := f.Results["node_energy_j"]; ok {
			f.Metrics[MNodePower] = j / d
			if haveOwn && own.NodeJ > 0 {
				f.Metrics[MNodeEnergy] = j / own.NodeJ
			}
		}
	}
	sutJ, nodeJ, err := g.samples(ctx, &f, r)
	if err != nil {
		return f, err
	}
	if nodeJ > 0 {
		f.Metrics[MSUTCPU2] = sutJ / nodeJ * float64(g.Pids.CPUs())
	}
	if haveOwn && own.SUTJ > 0 {
		f.Metrics[MSUTEnergy2] = sutJ / own.SUTJ
	}
	if sutJ > 0 {
		if j, ok := f.Results["sut_energy_j"]; ok {
			f.Metrics[MSUTAnalysis] = j / sutJ
		}
		if a, ok := g.Events.Analyzed(runID); ok {
			f.Metrics[MSUTAnalysis2] = a.EnergyJ / sutJ
		}
	}
	if haveOwn && own.NodeJ > 0 {
		f.Metrics[MNodeEnergy2] = nodeJ / own.NodeJ
	}
	return f, nil
}

func topicName(base, def, runID string) string {
	if base == "" {
		base = def
	}
	return base + "-" + runID
}

// results reads the run's result rows of its newest analysis, and the
// flags among them (rows named flag_* with a value other than 0).
func (g *Gatherer) results(ctx context.Context, f *RunFacts) error {
	rows, err := g.Store.Conn().Query(ctx, `
		SELECT scope, metric, value FROM results FINAL
		WHERE experiment_id = ? AND run_id = ?
		  AND analyzed_ms = (SELECT max(analyzed_ms) FROM results WHERE experiment_id = ? AND run_id = ?)`,
		f.ExperimentID, f.RunID, f.ExperimentID, f.RunID)
	if err != nil {
		return fmt.Errorf("read results of %s: %w", f.RunID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var scope, metric string
		var v float64
		if err := rows.Scan(&scope, &metric, &v); err != nil {
			return fmt.Errorf("scan results of %s: %w", f.RunID, err)
		}
		if strings.HasPrefix(metric, "flag_") && v != 0 {
			f.Flags = append(f.Flags, metric)
		}
		if scope == "run" {
			if f.Results == nil {
				f.Results = map[string]float64{}
			}
			f.Results[metric] = v
		}
	}
	sort.Strings(f.Flags)
	f.Flags = compactStrings(f.Flags)
	return rows.Err()
}

func compactStrings(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// duplicates counts duplicate rows: samples by (series, ts_ms) in the run's
// time span without any de-duplication, run_metrics points, and result keys
// after FINAL — each counted twice, by two differently written queries.
func (g *Gatherer) duplicates(ctx context.Context, f *RunFacts, r kvRun) error {
	from := r.CreatedMs - 5000
	to := time.Now().UnixMilli()
	if n := len(r.Phases); n > 0 && r.Phases[n-1].EndMs > 0 {
		to = r.Phases[n-1].EndMs + 5000
	}
	c := g.Store.Conn()
	q := func(dst *int64, query string, args ...any) error {
		var n uint64
		if err := c.QueryRow(ctx, query, args...).Scan(&n); err != nil {
			return fmt.Errorf("count duplicates of %s: %w", f.RunID, err)
		}
		*dst = int64(n)
		return nil
	}
	var nodes []string
	for _, t := range r.Targets {
		nodes = append(nodes, t.Node)
	}
	if len(nodes) > 0 {
		if err := q(&f.DupSamples, `SELECT count() FROM (SELECT node, scope, target_id, zone, ts_ms, count() AS c FROM samples
			WHERE has(?, node) AND ts_ms >= ? AND ts_ms <= ? GROUP BY node, scope, target_id, zone, ts_ms HAVING c > 1)`, nodes, from, to); err != nil {
			return err
		}
		if err := q(&f.DupSamplesConfirmed, `SELECT toUInt64(count() - uniqExact(node, scope, target_id, zone, ts_ms)) FROM samples
			WHERE has(?, node) AND ts_ms >= ? AND ts_ms <= ?`, nodes, from, to); err != nil {
			return err
		}
	}
	if err := q(&f.DupRunMetrics, `SELECT count() FROM (SELECT name, labels, ts_ms, count() AS c FROM run_metrics
		WHERE experiment_id = ? AND run_id = ? GROUP BY name, labels, ts_ms HAVING c > 1)`, f.ExperimentID, f.RunID); err != nil {
		return err
	}
	if err := q(&f.DupRunMetricsConfirmed, `SELECT toUInt64(count() - uniqExact(name, labels, ts_ms)) FROM run_metrics
		WHERE experiment_id = ? AND run_id = ?`, f.ExperimentID, f.RunID); err != nil {
		return err
	}
	if err := q(&f.DupResults, `SELECT count() FROM (SELECT scope, subject, metric, count() AS c FROM results FINAL
		WHERE experiment_id = ? AND run_id = ? GROUP BY scope, subject, metric HAVING c > 1)`, f.ExperimentID, f.RunID); err != nil {
		return err
	}
	return q(&f.DupResultsConfirmed, `SELECT toUInt64(count() - uniqExact(scope, subject, metric)) FROM results FINAL
		WHERE experiment_id = ? AND run_id = ?`, f.ExperimentID, f.RunID)
}

// samples checks the coverage of the window by the node's series and the
// SUT target's series, and sums their energy in the window.
func (g *Gatherer) samples(ctx context.Context, f *RunFacts, r kvRun) (sutJ, nodeJ float64, err error) {
	var nodes, sut []string
	for _, t := range r.Targets {
		if !slices.Contains(nodes, t.Node) {
			nodes = append(nodes, t.Node)
		}
		if (t.Role == "" || t.Role == "sut") && !g.SUTUnmeasured {
			sut = append(sut, t.ID)
		}
	}
	if len(nodes) == 0 {
		f.Unknown["samples"] = "the run has no targets"
		return 0, 0, nil
	}
	margin := int64(10_000)
	q, args := `
		SELECT node, scope, target_id, zone, ts_ms, toInt64(interval_ms), delta_j FROM samples
		WHERE has(?, node) AND (scope = 'node' OR has(?, target_id)) AND ts_ms > ? AND ts_ms < ?
		ORDER BY ts_ms`, []any{nodes, sut, f.MeasureStartMs - margin, f.MeasureEndMs + margin}
	if len(sut) == 0 { // ClickHouse 18.16 cannot type an empty array parameter
		q, args = `
		SELECT node, scope, target_id, zone, ts_ms, toInt64(interval_ms), delta_j FROM samples
		WHERE has(?, node) AND scope = 'node' AND ts_ms > ? AND ts_ms < ?
		ORDER BY ts_ms`, []any{nodes, f.MeasureStartMs - margin, f.MeasureEndMs + margin}
	}
	rows, err := g.Store.Conn().Query(ctx, q, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("read samples of %s: %w", f.RunID, err)
	}
	type key struct{ node, scope, target, zone string }
	series := map[key][]Sample{}
	for rows.Next() {
		var k key
		var s Sample
		if err := rows.Scan(&k.node, &k.scope, &k.target, &k.zone, &s.TsMs, &s.IntervalMs, &s.DeltaJ); err != nil {
			rows.Close()
			return 0, 0, fmt.Errorf("scan samples of %s: %w", f.RunID, err)
		}
		series[k] = append(series[k], s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	// Every expected series is checked, also one with no row at all.
	for _, n := range nodes {
		found := false
		for k := range series {
			found = found || (k.node == n && k.scope == "node")
		}
		if !found {
			series[key{n, "node", "", ""}] = nil
		}
	}
	for _, id := range sut {
		found := false
		for k := range series {
			found = found || k.target == id
		}
		if !found {
			series[key{r.Targets[0].Node, "process", id, ""}] = nil
		}
	}
	byName := func(a, b key) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
	for _, k := range slices.SortedFunc(maps.Keys(series), byName) {
		ss := series[k]
		role := "sut"
		if k.scope == "node" {
			role = "node"
		}
		cov := Cover(ss, f.MeasureStartMs, f.MeasureEndMs, g.IntervalMs)
		j := EnergyIn(ss, f.MeasureStartMs, f.MeasureEndMs)
		sf := SeriesFacts{Key: strings.Join([]string{k.node, k.scope, k.target, k.zone}, "/"), Role: role, Coverage: cov, EnergyJ: j}
		if h := longest(cov.Holes); h.Len() > 0 {
			var n uint64
			err := g.Store.Conn().QueryRow(ctx, `SELECT count() FROM samples WHERE node = ? AND scope = ? AND target_id = ? AND zone = ?
				AND ts_ms > ? AND ts_ms - interval_ms < ?`, k.node, k.scope, k.target, k.zone, h.StartMs, h.EndMs).Scan(&n)
			if err != nil {
				return 0, 0, fmt.Errorf("re-check a hole of %s: %w", f.RunID, err)
			}
			sf.HoleConfirmed = n == 0
		}
		f.Series = append(f.Series, sf)
		if role == "node" {
			nodeJ += j
		} else {
			sutJ += j
		}
		if g.IntervalMs > 0 {
			for _, h := range cov.Holes {
				f.SamplesLost += h.Len() / g.IntervalMs
			}
		}
	}
	return sutJ, nodeJ, nil
}
