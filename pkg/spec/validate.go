package spec

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
)

// Validate reports every problem with its field path.
func (e *Experiment) Validate() error {
	var p Problems
	add := adder(&p, "")
	if e.APIVersion != APIVersion {
		add("apiVersion", "got %q, expected %q", e.APIVersion, APIVersion)
	}
	if e.Kind != "Experiment" {
		add("kind", "got %q, expected Experiment", e.Kind)
	}
	if e.Metadata.Name == "" {
		add("metadata.name", "required")
	} else if !validName(e.Metadata.Name) {
		add("metadata.name", "%q: expected lower-case letters, digits and '-', starting and ending with a letter or digit (at most 63)", e.Metadata.Name)
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
	sweep, tooLarge := e.sweepProblems()
	p = append(p, sweep...)
	if tooLarge {
		return p
	}
	p = append(p, s.SLOs.problems()...)
	p = append(p, s.lagWarmupProblems()...)
	p = append(p, s.searchProblems()...)
	p = append(p, s.Trigger.problems()...)
	if len(p) > 0 {
		return p
	}
	return nil
}

// adder returns a function appending a problem at prefix+path to p.
func adder(p *Problems, prefix string) func(path, format string, args ...any) {
	return func(path, format string, args ...any) { *p = append(*p, prefix+path+": "+fmt.Sprintf(format, args...)) }
}

// sweepProblems checks the factors, inclusions and exclusions: first the
// shape of every factor, then the size of the sweep, and only then each
// value's run config — that costs a config per value, so it is done for
// sweeps that are allowed at all. tooLarge reports a sweep that cannot be
// counted or exceeds MaxRuns, after which nothing else is checked.
func (e *Experiment) sweepProblems() (p Problems, tooLarge bool) {
	add := adder(&p, "")
	s := e.Spec
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
			return p, true
		}
	}
	if n > MaxRuns {
		add("spec.factors", "the sweep expands to %s%d runs (with repetitions; exclusions count only when the full grid is at most %d), more than the %d an experiment may have: split it",
			map[bool]string{true: "", false: "at least "}[allShaped], n, MaxRuns, MaxRuns)
		return p, true
	}
	// A problem the spec's own run config has is reported once, at its
	// field (and --set argument), not again for every factor value.
	base := map[string]bool{}
	for _, q := range s.RunConfig.problems("") {
		base[q] = true
	}
	for i, f := range s.Factors {
		if shaped[i] {
			p = append(p, s.factorValueProblems(fmt.Sprintf("spec.factors[%d]", i), f, base)...)
		}
	}
	p = append(p, s.combinationProblems(seen, base)...)
	return p, false
}

// combinationProblems checks inclusions (each must make a valid run) and
// exclusions (each must name swept factors only).
func (s Spec) combinationProblems(swept, base map[string]bool) Problems {
	var p Problems
	add := adder(&p, "")
	for i, inc := range s.Include {
		path := fmt.Sprintf("spec.include[%d]", i)
		if len(inc) == 0 {
			add(path, "empty combination")
			continue
		}
		rc, err := s.RunConfig.With(inc)
		if err != nil {
			add(path, "%v", err)
		} else if probs := newProblems(rc.problems(""), base); len(probs) > 0 {
			add(path, "makes the run invalid: %s", strings.Join(probs, "; "))
		}
	}
	for i, exc := range s.Exclude {
		path := fmt.Sprintf("spec.exclude[%d]", i)
		if len(exc) == 0 {
			add(path, "empty combination")
		}
		for k := range exc {
			if !swept[k] {
				add(path, "%q is not a swept factor", k)
			}
		}
	}
	return p
}

// newProblems drops from probs those in base.
func newProblems(probs Problems, base map[string]bool) Problems {
	if len(base) == 0 {
		return probs
	}
	out := probs[:0]
	for _, q := range probs {
		if !base[q] {
			out = append(out, q)
		}
	}
	return out
}

// factorValueProblems reports the first value of f that does not make a
// valid run config (beyond the problems base of the spec's own config).
func (s Spec) factorValueProblems(path string, f Factor, base map[string]bool) Problems {
	var p Problems
	add := adder(&p, "")
	vals, err := f.Expand()
	if err != nil {
		add(path, "%v", err)
		return p
	}
	for _, v := range vals {
		rc, err := s.RunConfig.With(map[string]string{f.Name: v})
		if err != nil {
			add(path, "value %q: %v", v, err)
			break
		}
		if probs := newProblems(rc.problems(""), base); len(probs) > 0 {
			add(path, "value %q makes the run invalid: %s", v, strings.Join(probs, "; "))
			break
		}
	}
	return p
}

// problems checks the SLO thresholds.
func (o SLOs) problems() Problems {
	var p Problems
	add := adder(&p, "spec.slos.")
	if o.LagTrendSlope < 0 {
		add("lagTrendSlope", "got %g, expected zero or more", o.LagTrendSlope)
	}
	if o.LagWarmup.Duration < 0 {
		add("lagWarmup", "got %s, expected zero or more", o.LagWarmup.Duration)
	}
	if o.MinThroughputRatio < 0 || o.MinThroughputRatio > 1 {
		add("minThroughputRatio", "got %g, expected 0 to 1", o.MinThroughputRatio)
	}
	return p
}

// lagWarmupProblems refuses a lag warm-up that leaves no part of the
// measured window: it is counted from the load's start (the warm-up
// phase's), so one of at least warmup + measure would leave the lag SLO
// unjudged in every run — silently, as `slos.lagWarmup: 60s` (then the
// default) did to every window shorter than a minute.
func (s Spec) lagWarmupProblems() Problems {
	w, ph := s.SLOs.LagWarmup.Duration, s.RunConfig.Phases
	if load := ph.Warmup.Duration + ph.Measure.Duration; w > 0 && ph.Measure.Duration > 0 && w >= load {
		var p Problems
		adder(&p, "spec.")("slos.lagWarmup", "got %s, expected less than warmup + measure (%s + %s = %s): it is counted from the load's start, "+
			"so it leaves no part of the measured window [%s, %s] to fit the lag trend to (0 fits the whole window)",
			w, ph.Warmup.Duration, ph.Measure.Duration, load, ph.Warmup.Duration, load)
		return p
	}
	return nil
}

// searchProblems checks a capacity search, when the spec has one.
func (s Spec) searchProblems() Problems {
	q := s.Search
	if q == nil {
		return nil
	}
	var p Problems
	add := adder(&p, "spec.")
	if len(s.Factors) > 0 {
		add("search", "cannot be combined with factors: search one configuration per experiment")
	}
	if q.Start <= 0 {
		add("search.start", "got %g, expected a positive rate (msg/s)", q.Start)
	}
	if q.Max < q.Start || q.Max > MaxRatePerSec {
		add("search.max", "got %g, expected at least start (%g) and at most %g msg/s", q.Max, q.Start, MaxRatePerSec)
	}
	if q.Tolerance <= 0 || q.Tolerance >= 1 {
		add("search.tolerance", "got %g, expected between 0 and 1 (e.g. 0.05)", q.Tolerance)
	}
	return p
}

// problems checks a trigger, when the spec has one.
func (t *Trigger) problems() Problems {
	if t == nil {
		return nil
	}
	var p Problems
	add := adder(&p, "spec.")
	switch {
	case t.Subject == "" && t.Cron == "":
		add("trigger", "give subject or cron")
	case t.Subject != "" && t.Cron != "":
		add("trigger", "give subject or cron, not both")
	case t.Subject != "" && events.CheckTriggerSubject(t.Subject) != nil:
		add("trigger.subject", "%v", events.CheckTriggerSubject(t.Subject))
	case t.Cron != "":
		if _, err := ParseCron(t.Cron); err != nil {
			add("trigger.cron", "%v", err)
		}
	}
	if t.Cron != "" && len(t.Bind) > 0 {
		add("trigger.bind", "only subject triggers carry event values")
	}
	return p
}

// problems checks one run's configuration; prefix is its path in the
// document ("spec." for the spec's own, "" for a factor value's run).
func (rc RunConfig) problems(prefix string) Problems {
	var p Problems
	add := adder(&p, prefix)
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
	if w.Sensors <= 0 {
		add("workload.sensors", "got %d, expected a positive number of sensors (at most %d)", w.Sensors, MaxSensors)
	} else if why := SensorsProblem(w.Sensors); why != "" {
		add("workload.sensors", "%s", why)
	}
	switch {
	case w.RatePerSec < 0 || w.RatePerSec > MaxRatePerSec:
		add("workload.ratePerSec", "got %g, expected a positive rate (at most %g msg/s)", w.RatePerSec, MaxRatePerSec)
	case w.Sensors > 0 && w.RatePerSec > MaxRatePerSensor*float64(w.Sensors):
		add("workload.ratePerSec", "got %g for %d sensors, expected at most %g msg/s (%g per sensor: one record a microsecond)",
			w.RatePerSec, w.Sensors, MaxRatePerSensor*float64(w.Sensors), float64(MaxRatePerSensor))
	}
	// The offered rate however it is written: sensors × 1000/periodMs is
	// bounded like ratePerSec (8×10⁷ sensors at 1 ms passed as 8×10¹⁰
	// msg/s, and the generators then timed out instead of refusing).
	if rate := float64(w.Sensors) * 1000 / float64(w.PeriodMs); w.RatePerSec == 0 && w.Sensors > 0 && w.PeriodMs > 0 && rate > MaxRatePerSec {
		add("workload.sensors", "%d sensors every %d ms (workload.periodMs) offer %g msg/s, expected at most %g msg/s (fewer sensors or a longer period)",
			w.Sensors, w.PeriodMs, rate, MaxRatePerSec)
	}
	if w.RatePerSec == 0 && w.PeriodMs <= 0 {
		add("workload.periodMs", "got %d, expected a positive period (or set ratePerSec)", w.PeriodMs)
	} else if w.RatePerSec == 0 && time.Duration(w.PeriodMs)*time.Millisecond > MaxPeriod {
		add("workload.periodMs", "got %d, expected at most %d (%s: every sensor sends once a period)", w.PeriodMs, MaxPeriod.Milliseconds(), MaxPeriod)
	}
	if w.Format != "avro" && w.Format != "json" {
		add("workload.format", "got %q, expected avro or json", w.Format)
	}
	if rc.Kafka.Partitions < 1 || rc.Kafka.Partitions > MaxPartitions {
		add("kafka.partitions", "got %d, expected 1 to %d", rc.Kafka.Partitions, MaxPartitions)
	}
	ph := rc.Phases
	for name, d := range map[string]time.Duration{"baseline": ph.Baseline.Duration, "warmup": ph.Warmup.Duration, "cooldown": ph.Cooldown.Duration} {
		if d < 0 {
			add("phases."+name, "got %s, expected zero or more", d)
		}
	}
	if ph.Measure.Duration <= 0 {
		add("phases.measure", "got %s, expected a positive duration", ph.Measure.Duration)
	} else if load := ph.Warmup.Duration + ph.Measure.Duration; load > MaxLoadDuration {
		add("phases.measure", "got %s with warmup %s, expected a load (warmup + measure) of at most %s", ph.Measure.Duration, ph.Warmup.Duration, MaxLoadDuration)
	}
	m := rc.Meters
	if m.Source != "auto" && m.Source != "rapl" && m.Source != "model" {
		add("meters.source", "got %q, expected auto, rapl or model", m.Source)
	}
	if mm := m.Model; mm.IdleWatts != 0 || mm.MaxWatts != 0 {
		if mm.IdleWatts < 0 || mm.MaxWatts <= 0 || mm.MaxWatts < mm.IdleWatts {
			add("meters.model", "idleWatts %g and maxWatts %g: expected 0 <= idleWatts <= maxWatts and maxWatts > 0", mm.IdleWatts, mm.MaxWatts)
		}
	}
	if mm := m.Model; mm.IdleWattsPerVCPU < 0 || mm.MaxWattsPerVCPU < 0 || mm.PlatformWatts < 0 ||
		(mm.MaxWattsPerVCPU > 0 && mm.MaxWattsPerVCPU < mm.IdleWattsPerVCPU) {
		add("meters.model", "idleWattsPerVCPU %g, maxWattsPerVCPU %g, platformWatts %g: expected all >= 0 and idleWattsPerVCPU <= maxWattsPerVCPU",
			mm.IdleWattsPerVCPU, mm.MaxWattsPerVCPU, mm.PlatformWatts)
	}
	if mm := m.Model; mm.IdleWatts > MaxModelWatts || mm.MaxWatts > MaxModelWatts || mm.PlatformWatts > MaxModelWatts {
		add("meters.model", "idleWatts %g, maxWatts %g, platformWatts %g: expected each at most %d W (a node's plausible draw)",
			mm.IdleWatts, mm.MaxWatts, mm.PlatformWatts, MaxModelWatts)
	}
	if mm := m.Model; mm.IdleWattsPerVCPU > MaxModelWattsPerVCPU || mm.MaxWattsPerVCPU > MaxModelWattsPerVCPU {
		add("meters.model", "idleWattsPerVCPU %g, maxWattsPerVCPU %g: expected each at most %d W (a vCPU's plausible draw)",
			mm.IdleWattsPerVCPU, mm.MaxWattsPerVCPU, MaxModelWattsPerVCPU)
	}
	if m.Sample.Duration < 100*time.Millisecond {
		add("meters.interval", "got %s, expected at least 100ms", m.Sample.Duration)
	} else if ph.Measure.Duration > 0 && m.Sample.Duration > max(ph.Measure.Duration, energy.DefaultInterval) {
		// The default interval is allowed whatever the window: a window
		// shorter than it (a test's) is the collector's default too.
		add("meters.interval", "got %s, expected at most the measured window (phases.measure %s) or the default %s: a window needs samples inside it",
			m.Sample.Duration, ph.Measure.Duration, energy.DefaultInterval)
	}
	return p
}

func validName(s string) bool {
	// It starts every id of the experiment and its runs, which must begin
	// and end with a letter or digit (the events' id pattern; an id
	// starting with '-' would also read as a flag on the command line).
	if len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
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

// problems checks a range before anything is generated from it: finite
// bounds and step, a positive step, to >= from, at most MaxRangeValues
// values, and a step large enough to change the values (a step below the
// precision of a float64 near from would repeat one value).
func (r Range) problems(path string) Problems {
	var p Problems
	add := adder(&p, path+".")
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
		for _, f := range yamlFields(t) {
			if f.inline {
				if t.Field(f.index).Type == reflect.TypeFor[RunConfig]() && t == reflect.TypeFor[Spec]() {
					continue
				}
				p = append(p, finiteProblems(v.Field(f.index), path)...)
				continue
			}
			name := f.tag
			if name == "" || name == "-" {
				name = f.goName
			}
			child := name
			if path != "" {
				child = strings.TrimSuffix(path, ".") + "." + name
			}
			p = append(p, finiteProblems(v.Field(f.index), child)...)
		}
	}
	return p
}

// kubernetesProblems checks the backend/template pairing and, for backend
// kubernetes, its section.
func (s SUT) kubernetesProblems(prefix string) Problems {
	var p Problems
	add := adder(&p, prefix+"sut.")
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
	if k.Replicas < 0 || k.Replicas > MaxReplicas {
		add("kubernetes.replicas", "got %d, expected 1 to %d (0 means 1)", k.Replicas, MaxReplicas)
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
