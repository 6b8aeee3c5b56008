package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
)

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
