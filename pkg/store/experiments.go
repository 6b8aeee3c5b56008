package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

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

// UpsertExperiment writes (or replaces) an experiment row.
func (s *Store) UpsertExperiment(ctx context.Context, e Experiment) error {
	return insertRow(ctx, s.conn, "upsert experiment "+e.ExperimentID, `INSERT INTO experiments (experiment_id, name, spec, spec_hash, runs_total, state,
		labels, greenflow_version, git_commit, environment, seed, created_ms, updated_ms)`,
		e.ExperimentID, e.Name, e.Spec, e.SpecHash, e.RunsTotal, e.State, e.Labels, e.GreenflowVersion, e.GitCommit,
		e.Environment, e.Seed, e.CreatedMs, nowVersion())
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

// GetExperiment returns the latest row of an experiment (ErrNotFound when
// there is none).
func (s *Store) GetExperiment(ctx context.Context, experimentID string) (Experiment, error) {
	out, err := queryAll(ctx, s.conn, "read experiment "+experimentID, `
		SELECT experiment_id, name, spec, spec_hash, runs_total, state, labels, greenflow_version, git_commit,
		       environment, seed, created_ms
		FROM experiments FINAL WHERE experiment_id = ?`, []any{experimentID}, func(rows driver.Rows, e *Experiment) error {
		return rows.Scan(&e.ExperimentID, &e.Name, &e.Spec, &e.SpecHash, &e.RunsTotal, &e.State, &e.Labels,
			&e.GreenflowVersion, &e.GitCommit, &e.Environment, &e.Seed, &e.CreatedMs)
	})
	if err != nil {
		return Experiment{}, err
	}
	if len(out) == 0 {
		return Experiment{}, fmt.Errorf("experiment %s: %w", experimentID, ErrNotFound)
	}
	return out[0], nil
}
