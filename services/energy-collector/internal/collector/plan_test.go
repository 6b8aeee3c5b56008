package collector

import (
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
)

// TestPlanSaysWhoseIntervalApplies: the node is sampled at the finest of
// the collector's own interval and the runs' asks; the plan says which run
// asked it, or none when the collector's own is finer (the effective
// configuration's note must not blame another run for it).
func TestPlanSaysWhoseIntervalApplies(t *testing.T) {
	a := newAssignments()
	on := []events.Target{{ID: "node/n1", Kind: "node", Node: "n1"}}
	a.runs["r1"] = events.CollectAssign{RunID: "r1", Targets: on, Meters: &events.CollectMeters{IntervalMs: 3_600_000}}
	p := a.plan("n1", time.Second)
	if p.interval != time.Second || p.intervalRun != "" {
		t.Fatalf("a 1 h ask under the collector's 1 s: got %s from %q, want 1s from the collector", p.interval, p.intervalRun)
	}
	a.runs["r2"] = events.CollectAssign{RunID: "r2", Targets: on, Meters: &events.CollectMeters{IntervalMs: 500}}
	p = a.plan("n1", time.Second)
	if p.interval != 500*time.Millisecond || p.intervalRun != "r2" {
		t.Fatalf("got %s from %q, want 500ms from r2", p.interval, p.intervalRun)
	}
}
