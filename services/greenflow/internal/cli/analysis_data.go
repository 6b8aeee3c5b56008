package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// runTarget is a measurement target of a run as the analyzer recorded it.
type runTarget struct {
	RunID, TargetID, Kind, Node, Role string
}

// loadTargets reads the newest analysis' targets of every run of an
// experiment (table run_targets), by run.
func loadTargets(ctx context.Context, st *store.Store, experimentID string) (map[string][]runTarget, error) {
	rows, err := st.Conn().Query(ctx, `
		SELECT run_id, target_id, kind, node, role FROM run_targets FINAL
		WHERE experiment_id = ? AND (run_id, analyzed_ms) IN (
		  SELECT run_id, max(analyzed_ms) FROM run_targets WHERE experiment_id = ? GROUP BY run_id)
		ORDER BY run_id, target_id`, experimentID, experimentID)
	if err != nil {
		return nil, fmt.Errorf("query targets of %s: %w", experimentID, err)
	}
	defer rows.Close()
	out := map[string][]runTarget{}
	for rows.Next() {
		var t runTarget
		if err := rows.Scan(&t.RunID, &t.TargetID, &t.Kind, &t.Node, &t.Role); err != nil {
			return nil, fmt.Errorf("scan target: %w", err)
		}
		out[t.RunID] = append(out[t.RunID], t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read targets of %s: %w", experimentID, err)
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
func nodesOf(ts []runTarget) []string {
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
		return "unattributed"
	}
	if r, ok := roles[target]; ok {
		return r
	}
	return "other"
}

// rolesOf maps target ids to roles.
func rolesOf(ts []runTarget) map[string]string {
	out := make(map[string]string, len(ts))
	for _, t := range ts {
		out[t.TargetID] = t.Role
	}
	return out
}
