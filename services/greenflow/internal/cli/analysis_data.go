package cli

import (
	"context"
	"encoding/json"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// loadTargets reads the newest analysis' targets of every run of an
// experiment, by run.
func loadTargets(ctx context.Context, st *store.Store, experimentID string) (map[string][]store.RunTarget, error) {
	ts, err := st.RunTargets(ctx, experimentID)
	if err != nil {
		return nil, err
	}
	out := map[string][]store.RunTarget{}
	for _, t := range ts {
		out[t.RunID] = append(out[t.RunID], t)
	}
	return out, nil
}

// runSpan is the time a run's samples are read for: its recorded phases, or
// the measurement window when none are stored.
func runSpan(r store.Run) (startMs, endMs int64, phases []events.Phase) {
	_ = json.Unmarshal([]byte(r.Phases), &phases)
	startMs, endMs = r.MeasureStartMs, r.MeasureEndMs
	for _, p := range phases {
		if p.StartMs > 0 && (startMs == 0 || p.StartMs < startMs) {
			startMs = p.StartMs
		}
		if p.EndMs > endMs {
			endMs = p.EndMs
		}
	}
	return startMs, endMs, phases
}

// phaseAt names the phase containing ts ("" outside every phase).
func phaseAt(phases []events.Phase, ts int64) string {
	for _, p := range phases {
		if ts > p.StartMs && (p.EndMs == 0 || ts <= p.EndMs) {
			return p.Name
		}
	}
	return ""
}

// nodesOf returns the distinct nodes of targets, in order.
func nodesOf(ts []store.RunTarget) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range ts {
		if !seen[t.Node] {
			seen[t.Node] = true
			out = append(out, t.Node)
		}
	}
	return out
}

// component names the series a sample belongs to in plots and exports:
// the node total, a role of the run's targets, other processes or the
// unattributed rest.
func component(scope, node, target string, roles map[string]string) string {
	switch scope {
	case "node":
		return "node " + node
	case "zone":
		return "zone " + node
	case "unattributed":
		return results.RoleUnattributed
	}
	if r, ok := roles[target]; ok {
		return r
	}
	return results.RoleOther
}

// rolesOf maps target ids to roles.
func rolesOf(ts []store.RunTarget) map[string]string {
	out := make(map[string]string, len(ts))
	for _, t := range ts {
		out[t.TargetID] = t.Role
	}
	return out
}
