// What the analysis commands read of an experiment: the store (a running
// dev stack's, a DSN, or the dev state's data), the runs' targets, spans
// and phases, and the component a sample belongs to.

package report

import (
	"context"
	"fmt"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// experiment is what the export and the report read of an experiment,
// each table once: its runs, their results (as stored, and joined per run)
// and their targets (by run).
type experiment struct {
	runs    []store.Run
	results []store.Result
	rows    []ResultRow
	targets map[string][]store.RunTarget
}

// loadExperiment reads an experiment with at least one run.
func loadExperiment(ctx context.Context, st *store.Store, experimentID string) (experiment, error) {
	var e experiment
	var err error
	if e.runs, err = st.Runs(ctx, experimentID); err != nil {
		return e, err
	}
	if len(e.runs) == 0 {
		return e, fmt.Errorf("experiment %s: no runs stored", experimentID)
	}
	if e.results, err = st.Results(ctx, experimentID); err != nil {
		return e, err
	}
	e.rows = resultRows(e.runs, e.results)
	e.targets, err = loadTargets(ctx, st, experimentID)
	return e, err
}

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

// phaseAt names the phase containing ts ("" outside every phase).
func phaseAt(phases []events.Phase, ts int64) string {
	for _, p := range phases {
		if ts > p.StartMs && (p.EndMs == 0 || ts <= p.EndMs) {
			return p.Name
		}
	}
	return ""
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
