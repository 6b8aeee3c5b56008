package spec_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/spec"
)

// FuzzParseAndExpand: whatever text and override arrive, Parse either
// refuses them with problems or returns a spec that counts and expands
// without panicking, into exactly the runs it counted, each with a valid
// config. The seed corpus (testdata/fuzz/FuzzParseAndExpand) holds the
// examples and the inputs that used to panic.
func FuzzParseAndExpand(f *testing.F) {
	f.Add([]byte(head+"spec:\n  factors:\n    - {name: workload.sensors, range: {from: 1, to: 10, step: .nan}}\n"), "")
	f.Add([]byte(head), "spec.workload.ratePerSec=.inf")
	f.Add([]byte(head+"spec:\n  repetitons: 3\n  workload: {sensors: 1e300}\n"), "spec.nonexistent.x=1\nspec.workload.value=NaN")
	f.Add([]byte(head+"spec:\n  workload: &w {sensors: 7}\n  search: {<<: [{start: 100, max: 1000}], tolerance: 0.1}\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, set string) {
		var sets []string
		if set != "" {
			sets = strings.Split(set, "\n")
		}
		e, err := spec.Parse(data, sets)
		if err != nil {
			_, probs := err.(spec.Problems)
			_, tooLarge := err.(*spec.TooLargeError)
			if !probs && !tooLarge {
				t.Fatalf("Parse error is %T, expected Problems or *TooLargeError: %v", err, err)
			}
			return
		}
		n, err := e.Count()
		if err != nil {
			t.Fatalf("a validated spec does not count: %v", err)
		}
		if n < 1 || n > spec.MaxRuns {
			t.Fatalf("a validated spec counts %d runs, expected 1 to %d", n, spec.MaxRuns)
		}
		if _, err := spec.Prepare(data, sets, true); err != nil && !errors.Is(err, spec.ErrTooLarge) {
			t.Fatalf("Prepare refuses what Parse accepted: %v", err)
		}
		if n > 2000 {
			return // expanding is the same code for more runs, only slower
		}
		plan, err := e.Expand("fuzz", 1)
		if err != nil {
			t.Fatalf("a validated spec does not expand: %v", err)
		}
		if e.Spec.Search == nil && len(plan.Runs) != n {
			t.Fatalf("expanded %d runs, counted %d", len(plan.Runs), n)
		}
		for _, r := range plan.Runs {
			if r.Config.Workload.Rate() <= 0 {
				t.Fatalf("run %s offers %g msg/s", r.ID, r.Config.Workload.Rate())
			}
		}
	})
}

// FuzzParseCron: any expression is refused or parsed; a parsed schedule's
// Next ends (no endless loop) and is after its input or zero ("never").
func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"0 3 * * *", "*/15 * * * 1-5", "0 0 30 2 *", "59/30 23 31 12 7", "1,2,3 4-6 */2 * 0"} {
		f.Add(s)
	}
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := spec.ParseCron(expr)
		if err != nil {
			return
		}
		if next := c.Next(from); !next.IsZero() && !next.After(from) {
			t.Fatalf("%q: next %s is not after %s", expr, next, from)
		}
	})
}
