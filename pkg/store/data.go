package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Sample is one meter reading for one series. A series — (Node, Scope,
// TargetID, Zone, Source) — has at most one sample per TsMs: that key
// identifies a sample, so writing the same sample twice is harmless (the
// samples table collapses rows with equal keys; readers that cannot wait
// for merges de-duplicate by the same key).
type Sample struct {
	TsMs       int64
	Node       string
	Scope      string // node | zone | process | pod | unattributed
	TargetID   string
	Zone       string
	Source     string // rapl | model | scaphandre | kepler | promql
	PowerW     float64
	EnergyJ    float64 // cumulative for the series since the collector started it
	DeltaJ     float64 // energy of the interval ending at TsMs
	IntervalMs uint32
	Estimated  bool
	Collector  string
}

// RunMetric is one point of a run's time series, identified by
// (ExperimentID, RunID, Name, Labels, TsMs): a point recorded twice (a
// redelivered message) collapses into one, as for Sample.
type RunMetric struct {
	ExperimentID string
	RunID        string
	TsMs         int64
	Name         string
	Labels       string
	Value        float64
}

// Experiment is the stored record of a submitted experiment.
type Experiment struct {
	ExperimentID     string
	Name             string
	Spec             string
	SpecHash         string
	RunsTotal        uint32
	State            string
	Labels           string
	GreenflowVersion string
	GitCommit        string
	Environment      string
	Seed             int64
	CreatedMs        int64
}

// Run is the stored record of one run.
type Run struct {
	ExperimentID   string
	RunID          string
	Index          uint32
	Repetition     uint32
	Config         string
	ConfigHash     string
	Factors        string
	State          string
	Reason         string
	Phases         string
	MeasureStartMs int64
	MeasureEndMs   int64
	CreatedMs      int64
	// Version orders writes of the same run (the newest wins); the scheduler
	// passes its state revision so concurrent writers cannot reorder states.
	// 0 uses the insert time.
	Version uint64
}

// Result is one metric of one run's results.
type Result struct {
	ExperimentID string
	RunID        string
	Scope        string // run | node | target | role
	Subject      string // node name, target id, role; "" for scope run
	Metric       string
	Value        float64
	Unit         string
	Estimated    bool
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// insertRow inserts one row through a batch: ClickHouse 18.16 does not accept
// `INSERT … VALUES` with client-bound values over the native protocol (it
// waits for a data block), so every insert is a batch.
func (s *Store) insertRow(ctx context.Context, query string, values ...any) error {
	return insertRow(ctx, s.conn, query, values...)
}

func insertRow(ctx context.Context, conn driver.Conn, query string, values ...any) error {
	batch, err := conn.PrepareBatch(ctx, query)
	if err != nil {
		return err
	}
	if err := batch.Append(values...); err != nil {
		_ = batch.Abort()
		return err
	}
	return batch.Send()
}

// InsertSamples writes samples in one batch. It is idempotent by the
// sample's key (see Sample), so a batch may be retried after a timeout or
// rewritten by another collector.
func (s *Store) InsertSamples(ctx context.Context, samples []Sample) error {
	if len(samples) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO samples (ts_ms, ts, node, scope, target_id, zone, source, power_w, energy_j, delta_j, interval_ms, estimated, collector)")
	if err != nil {
		return fmt.Errorf("prepare samples batch: %w", err)
	}
	for _, x := range samples {
		if err := batch.Append(x.TsMs, time.UnixMilli(x.TsMs).UTC(), x.Node, x.Scope, x.TargetID, x.Zone, x.Source,
			x.PowerW, x.EnergyJ, x.DeltaJ, x.IntervalMs, b2u(x.Estimated), x.Collector); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append sample: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d samples: %w", len(samples), err)
	}
	return nil
}

// InsertRunMetrics writes run metric points in one batch; idempotent by
// the point's key (see RunMetric).
func (s *Store) InsertRunMetrics(ctx context.Context, points []RunMetric) error {
	if len(points) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO run_metrics (experiment_id, run_id, ts_ms, name, labels, value)")
	if err != nil {
		return fmt.Errorf("prepare run_metrics batch: %w", err)
	}
	for _, p := range points {
		if err := batch.Append(p.ExperimentID, p.RunID, p.TsMs, p.Name, p.Labels, p.Value); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append run metric: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d run metrics: %w", len(points), err)
	}
	return nil
}

// UpsertExperiment writes (or replaces) an experiment row.
func (s *Store) UpsertExperiment(ctx context.Context, e Experiment) error {
	err := s.insertRow(ctx, `INSERT INTO experiments (experiment_id, name, spec, spec_hash, runs_total, state, labels,
		greenflow_version, git_commit, environment, seed, created_ms, updated_ms)`,
		e.ExperimentID, e.Name, e.Spec, e.SpecHash, e.RunsTotal, e.State, e.Labels, e.GreenflowVersion, e.GitCommit,
		e.Environment, e.Seed, e.CreatedMs, nowVersion())
	if err != nil {
		return fmt.Errorf("upsert experiment %s: %w", e.ExperimentID, err)
	}
	return nil
}

// SetExperimentState records a new state for an existing experiment row.
func (s *Store) SetExperimentState(ctx context.Context, experimentID, state string) error {
	err := s.conn.Exec(ctx, `INSERT INTO experiments
		SELECT experiment_id, name, spec, spec_hash, runs_total, ? AS state, labels, greenflow_version, git_commit,
		       environment, seed, created_ms, ? AS updated_ms
		FROM experiments FINAL WHERE experiment_id = ?`, state, nowVersion(), experimentID)
	if err != nil {
		return fmt.Errorf("set state of experiment %s: %w", experimentID, err)
	}
	return nil
}

// UpsertRuns writes (or replaces) run rows in one batch.
func (s *Store) UpsertRuns(ctx context.Context, runs []Run) error {
	if len(runs) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, `INSERT INTO runs (experiment_id, run_id, idx, repetition, config, config_hash, factors, state,
		reason, phases, measure_start_ms, measure_end_ms, created_ms, updated_ms)`)
	if err != nil {
		return fmt.Errorf("prepare runs batch: %w", err)
	}
	for _, r := range runs {
		v := r.Version
		if v == 0 {
			v = nowVersion()
		}
		if err := batch.Append(r.ExperimentID, r.RunID, r.Index, r.Repetition, r.Config, r.ConfigHash, r.Factors, r.State, r.Reason, r.Phases,
			r.MeasureStartMs, r.MeasureEndMs, r.CreatedMs, v); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append run %s: %w", r.RunID, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("upsert %d runs: %w", len(runs), err)
	}
	return nil
}

// versionClock makes ReplacingMergeTree versions strictly increasing within a
// process even when two writes share a microsecond.
var versionClock struct {
	sync.Mutex
	last uint64
}

func nowVersion() uint64 {
	versionClock.Lock()
	defer versionClock.Unlock()
	v := uint64(time.Now().UnixMicro())
	if v <= versionClock.last {
		v = versionClock.last + 1
	}
	versionClock.last = v
	return v
}

// ReplaceResults replaces all result rows of a run: rows are written with a
// newer version, and rows of the previous analysis that the new one no longer
// produces are deleted, so re-analysis is idempotent.
func (s *Store) ReplaceResults(ctx context.Context, experimentID, runID string, results []Result) error {
	v := nowVersion()
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO results (experiment_id, run_id, scope, subject, metric, value, unit, estimated, analyzed_ms)")
	if err != nil {
		return fmt.Errorf("prepare results batch: %w", err)
	}
	for _, r := range results {
		if err := batch.Append(experimentID, runID, r.Scope, r.Subject, r.Metric, r.Value, r.Unit, b2u(r.Estimated), v); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append result: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert results of run %s: %w", runID, err)
	}
	return nil
}

// Results returns the latest results of an experiment (all runs), ordered by
// run and metric. Only the newest analysis of each run counts.
func (s *Store) Results(ctx context.Context, experimentID string) ([]Result, error) {
	rows, err := s.conn.Query(ctx, `
		SELECT r.run_id, r.scope, r.subject, r.metric, r.value, r.unit, r.estimated
		FROM results AS r FINAL
		ANY INNER JOIN (
			SELECT run_id, max(analyzed_ms) AS analyzed_ms FROM results WHERE experiment_id = ? GROUP BY run_id
		) AS latest USING (run_id, analyzed_ms)
		WHERE r.experiment_id = ?
		ORDER BY r.run_id, r.scope, r.subject, r.metric`, experimentID, experimentID)
	if err != nil {
		return nil, fmt.Errorf("query results of %s: %w", experimentID, err)
	}
	defer rows.Close()
	var out []Result
	for rows.Next() {
		r := Result{ExperimentID: experimentID}
		var est uint8
		if err := rows.Scan(&r.RunID, &r.Scope, &r.Subject, &r.Metric, &r.Value, &r.Unit, &est); err != nil {
			return nil, fmt.Errorf("scan result: %w", err)
		}
		r.Estimated = est == 1
		out = append(out, r)
	}
	return out, rows.Err()
}

// Runs returns the latest row of each run of an experiment, by index.
func (s *Store) Runs(ctx context.Context, experimentID string) ([]Run, error) {
	rows, err := s.conn.Query(ctx, `
		SELECT experiment_id, run_id, idx, repetition, config, config_hash, factors, state, reason, phases,
		       measure_start_ms, measure_end_ms, created_ms
		FROM runs FINAL WHERE experiment_id = ? ORDER BY idx`, experimentID)
	if err != nil {
		return nil, fmt.Errorf("query runs of %s: %w", experimentID, err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		var r Run
		if err := rows.Scan(&r.ExperimentID, &r.RunID, &r.Index, &r.Repetition, &r.Config, &r.ConfigHash, &r.Factors,
			&r.State, &r.Reason, &r.Phases, &r.MeasureStartMs, &r.MeasureEndMs, &r.CreatedMs); err != nil {
			return nil, fmt.Errorf("scan run: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// GetExperiment returns the latest row of an experiment.
func (s *Store) GetExperiment(ctx context.Context, experimentID string) (Experiment, error) {
	rows, err := s.conn.Query(ctx, `
		SELECT experiment_id, name, spec, spec_hash, runs_total, state, labels, greenflow_version, git_commit,
		       environment, seed, created_ms
		FROM experiments FINAL WHERE experiment_id = ?`, experimentID)
	if err != nil {
		return Experiment{}, fmt.Errorf("query experiment %s: %w", experimentID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Experiment{}, fmt.Errorf("query experiment %s: %w", experimentID, err)
		}
		return Experiment{}, fmt.Errorf("experiment %s: %w", experimentID, ErrNotFound)
	}
	var e Experiment
	if err := rows.Scan(&e.ExperimentID, &e.Name, &e.Spec, &e.SpecHash, &e.RunsTotal, &e.State, &e.Labels,
		&e.GreenflowVersion, &e.GitCommit, &e.Environment, &e.Seed, &e.CreatedMs); err != nil {
		return Experiment{}, fmt.Errorf("scan experiment: %w", err)
	}
	return e, nil
}
