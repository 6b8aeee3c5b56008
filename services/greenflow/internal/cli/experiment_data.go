// What the analysis commands read of an experiment: the store (a running
// dev stack's, a DSN, or the dev state's data), the runs' targets, spans
// and phases, and the component a sample belongs to.

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// openAnalysis parses an analysis command's flags and its n positional
// arguments (wrong says what was expected), runs checks on the flags, and
// opens the store; the returned function closes it.
func openAnalysis(ctx context.Context, fs *flag.FlagSet, c *connFlags, args []string, n int, wrong string,
	checks ...func() error) ([]string, *store.Store, func(), error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(pos) != n {
		return nil, nil, nil, errors.New(wrong)
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return nil, nil, nil, err
		}
	}
	st, closeStore, err := openStore(ctx, c)
	return pos, st, closeStore, err
}

// openStore opens the ClickHouse the flags point at; without a running dev
// stack or DSN it starts a server on the dev state's data for the duration
// of the command. The returned function closes everything.
func openStore(ctx context.Context, c *connFlags) (*store.Store, func(), error) {
	if err := c.resolve(false); err != nil && c.clickhouseDSNFile != "" {
		return nil, nil, err // an unreadable --clickhouse-dsn-file; no dev stack is fine
	}
	dsn := c.clickhouseDSN
	stopServer := func() {}
	if dsn == "" {
		dir := filepath.Join(c.stateDir, "clickhouse")
		if _, err := os.Stat(dir); err != nil {
			return nil, nil, fmt.Errorf("no running 'greenflow dev', no --clickhouse-dsn, and no ClickHouse data in %s", dir)
		}
		srv, err := chserver.Start(ctx, dir)
		if err != nil {
			return nil, nil, err
		}
		stopServer = func() { _ = srv.Stop() }
		dsn = srv.ReaderDSN("greenflow")
		if c.writer {
			dsn = srv.DSN("greenflow")
		}
	}
	open := store.OpenReadOnly
	if c.writer {
		open = store.Open
	}
	st, err := open(ctx, dsn, zap.NewNop())
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	return st, func() { _ = st.Close(); stopServer() }, nil
}

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
