package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// Services are the GreenFlow services the suite runs as processes and kills.
var Services = []string{"scheduler", "provisioner", "load-generator", "energy-collector", "analyzer"}

// Infrastructure the infra faults kill: the NATS server and the Kafka broker.
// TargetNone marks a control slot: an undisturbed run among the killed ones,
// which shows what the machine does to runs without any kill meanwhile.
const (
	TargetNATS  = "nats"
	TargetKafka = "kafka"
	TargetNone  = "none"
)

// Phases are the run phases a kill is timed to, in lifecycle order (the
// scheduler's run states between pending and the final ones).
var Phases = []string{"provisioning", "baseline", "warmup", "measuring", "cooldown", "teardown", "analyzing"}

// timedPhases last as long as the spec says; the others last as long as a
// service takes to answer, so a kill in them goes out at once.
var timedPhases = map[string]bool{"baseline": true, "warmup": true, "measuring": true, "cooldown": true}

// Fault segments a suite can run.
const (
	FaultServices = "services" // kill -9 one service process
	FaultInfra    = "infra"    // kill -9 the NATS server or the Kafka broker
	FaultReplicas = "replicas" // two instances of every service; kill one of two
)

// Kill is one planned fault: in the run of slot Slot, once it enters Phase
// and Offset has passed, kill -9 Target (instance Instance, 1-based) and
// start it again RestartAfter later.
type Kill struct {
	Slot         int           `json:"slot"`
	Segment      string        `json:"segment"`
	Target       string        `json:"target"`
	Instance     int           `json:"instance"`
	Phase        string        `json:"phase"`
	Offset       time.Duration `json:"offset_ns"`
	RestartAfter time.Duration `json:"restart_after_ns"`
	Config       string        `json:"config"` // the workload.sensors value of the run
}

func (k Kill) String() string {
	if k.Target == TargetNone {
		return fmt.Sprintf("slot %d: control, no kill (sensors=%s)", k.Slot, k.Config)
	}
	switch k.Target {
	case TargetAPIServer:
		return fmt.Sprintf("slot %d: stop the kube-apiserver for %s while the run is in %s (sensors=%s)", k.Slot, k.RestartAfter, k.Phase, k.Config)
	case TargetRBAC:
		return fmt.Sprintf("slot %d: the provisioner's role without delete on namespaces for the run's teardown (sensors=%s)", k.Slot, k.Config)
	}
	inst := ""
	if k.Instance > 0 {
		inst = fmt.Sprintf("#%d", k.Instance)
	}
	return fmt.Sprintf("slot %d: kill -9 %s%s in %s +%s, restart after %s (sensors=%s)", k.Slot, k.Target, inst, k.Phase,
		k.Offset.Round(time.Millisecond), k.RestartAfter.Round(time.Millisecond), k.Config)
}

// PhaseLengths are the nominal lengths of the timed phases, used to place a
// kill inside its phase.
type PhaseLengths struct {
	Baseline, Warmup, Measure, Cooldown time.Duration
}

func (p PhaseLengths) of(phase string) time.Duration {
	switch phase {
	case "baseline":
		return p.Baseline
	case "warmup":
		return p.Warmup
	case "measuring":
		return p.Measure
	case "cooldown":
		return p.Cooldown
	}
	return 0
}

// PlanOptions says what to plan.
type PlanOptions struct {
	Segment  string
	Targets  []string // services, or nats/kafka
	Kills    int      // 0: every target in every phase once
	Replicas int      // instances per target (1, or 2 for the replicas segment)
	Configs  []string // workload.sensors values, drawn per kill
	Phases   PhaseLengths
	// RestartAfter bounds the random delay before a restart; Fixed, when
	// set for a target, replaces it (the NATS server: ~10 s).
	RestartMin, RestartMax time.Duration
	Fixed                  map[string]time.Duration
	FirstSlot              int
	// ControlEvery inserts an undisturbed control slot after every that
	// many kills (0: none).
	ControlEvery int
	// Schedule, when set, is the (target, phase) of every kill, in order;
	// Kills is ignored and only offsets, delays and configurations are drawn.
	Schedule []Pair
}

// Pair is a planned (target, phase).
type Pair struct{ Target, Phase string }

// ParseSchedule reads "target:phase,target:phase,...".
func ParseSchedule(s string) ([]Pair, error) {
	var out []Pair
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		t, ph, ok := strings.Cut(part, ":")
		if !ok || !slices.Contains(Phases, ph) {
			return nil, fmt.Errorf("schedule: %q: expected target:phase with a phase among %s", part, strings.Join(Phases, ", "))
		}
		out = append(out, Pair{t, ph})
	}
	return out, nil
}

// Plan draws a kill schedule from rng. Targets are used evenly (each
// floor or ceil of Kills/len(Targets) times) and phases cycle through a
// shuffled order, so any Kills ≥ len(Phases) covers every phase; Kills = 0
// gives the full cross product targets × phases. Pairs repeat only when
// Kills exceeds the cross product. The order is shuffled too.
func Plan(rng *rand.Rand, o PlanOptions) ([]Kill, error) {
	if len(o.Targets) == 0 || len(o.Configs) == 0 {
		return nil, fmt.Errorf("plan %s: need at least one target and one configuration", o.Segment)
	}
	if o.Kills < 0 {
		return nil, fmt.Errorf("plan %s: kills: got %d, expected 0 (every pair) or more", o.Segment, o.Kills)
	}
	if o.RestartMax < o.RestartMin {
		return nil, fmt.Errorf("plan %s: restart delay: max %s below min %s", o.Segment, o.RestartMax, o.RestartMin)
	}
	type pair struct{ target, phase string }
	var pairs []pair
	all := len(o.Targets) * len(Phases)
	n := o.Kills
	if n == 0 {
		n = all
	}
	switch {
	case len(o.Schedule) > 0:
		for _, p := range o.Schedule {
			if !slices.Contains(o.Targets, p.Target) || !slices.Contains(Phases, p.Phase) {
				return nil, fmt.Errorf("plan %s: schedule entry %s:%s: expected a target among %v and a phase among %v", o.Segment, p.Target, p.Phase, o.Targets, Phases)
			}
			pairs = append(pairs, pair{p.Target, p.Phase})
		}
	case n >= all:
		for _, t := range o.Targets {
			for _, p := range Phases {
				pairs = append(pairs, pair{t, p})
			}
		}
		for len(pairs) < n {
			pairs = append(pairs, pair{o.Targets[rng.IntN(len(o.Targets))], Phases[rng.IntN(len(Phases))]})
		}
	default:
		// Targets evenly, phases cycling; try a few shuffles for the fewest
		// repeated pairs.
		best := -1
		for attempt := 0; attempt < 64 && best != 0; attempt++ {
			targets := cycle(rng, o.Targets, n)
			phases := cycle(rng, Phases, n)
			cand := make([]pair, n)
			seen := map[pair]bool{}
			dups := 0
			for i := range cand {
				cand[i] = pair{targets[i], phases[i]}
				if seen[cand[i]] {
					dups++
				}
				seen[cand[i]] = true
			}
			if best < 0 || dups < best {
				best, pairs = dups, cand
			}
		}
	}
	if len(o.Schedule) == 0 {
		rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
	}
	if o.ControlEvery > 0 {
		var with []pair
		for i, p := range pairs {
			with = append(with, p)
			if (i+1)%o.ControlEvery == 0 {
				with = append(with, pair{TargetNone, "-"})
			}
		}
		pairs = with
	}
	kills := make([]Kill, len(pairs))
	for i, p := range pairs {
		k := Kill{Slot: o.FirstSlot + i, Segment: o.Segment, Target: p.target, Phase: p.phase, Config: o.Configs[rng.IntN(len(o.Configs))]}
		if p.target == TargetNone {
			kills[i] = k
			continue
		}
		if o.Replicas > 1 {
			k.Instance = 1 + rng.IntN(o.Replicas)
		}
		if timedPhases[p.phase] {
			// Somewhere in the first 80 % of the phase, so the kill lands in it.
			l := o.Phases.of(p.phase)
			k.Offset = time.Duration(float64(l) * (0.05 + 0.75*rng.Float64())).Round(time.Millisecond)
		}
		if d, ok := o.Fixed[p.target]; ok {
			k.RestartAfter = d
		} else {
			k.RestartAfter = o.RestartMin + time.Duration(rng.Int64N(int64(o.RestartMax-o.RestartMin)+1))
		}
		k.RestartAfter = k.RestartAfter.Round(time.Millisecond)
		kills[i] = k
	}
	return kills, nil
}

// cycle returns n items: items repeated, each round in a new random order.
func cycle(rng *rand.Rand, items []string, n int) []string {
	out := make([]string, 0, n+len(items))
	for len(out) < n {
		round := slices.Clone(items)
		rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		out = append(out, round...)
	}
	return out[:n]
}

// Coverage counts kills per target and per phase.
type Coverage struct {
	ByTarget map[string]int
	ByPhase  map[string]int
}

// CoverageOf counts the kills of a plan (or, with observed phases, of what
// happened).
func CoverageOf(kills []Kill, phaseOf func(Kill) string) Coverage {
	c := Coverage{ByTarget: map[string]int{}, ByPhase: map[string]int{}}
	for _, k := range kills {
		if k.Target == TargetNone {
			continue
		}
		c.ByTarget[k.Target]++
		p := k.Phase
		if phaseOf != nil {
			p = phaseOf(k)
		}
		if p != "" {
			c.ByPhase[p]++
		}
	}
	return c
}

// Missing names the phases no kill covered.
func (c Coverage) Missing() []string {
	var out []string
	for _, p := range Phases {
		if c.ByPhase[p] == 0 {
			out = append(out, p)
		}
	}
	return out
}

func (c Coverage) String() string {
	var parts []string
	keys := make([]string, 0, len(c.ByTarget))
	for k := range c.ByTarget {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, c.ByTarget[k]))
	}
	var ph []string
	for _, p := range Phases {
		ph = append(ph, fmt.Sprintf("%s×%d", p, c.ByPhase[p]))
	}
	return strings.Join(parts, " ") + " | " + strings.Join(ph, " ")
}
