package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/greenflow/greenflow/pkg/results"
)

// Provenance assembles an experiment's provenance from its stored record
// and its runs' configurations (no table of its own). An experiment with
// runs but no record (lost, or written by an older version) gets what the
// runs say and names what is missing; one with neither is ErrNotFound.
func (s *Store) Provenance(ctx context.Context, experimentID string) (results.Provenance, error) {
	p := results.Provenance{ExperimentID: experimentID, Meters: []results.MeterProvenance{}}
	e, err := s.GetExperiment(ctx, experimentID)
	switch {
	case errors.Is(err, ErrNotFound):
		p.Missing = append(p.Missing, "the experiment record (spec, spec hash, version, commit, machine, seed)")
	case err != nil:
		return p, err
	default:
		p.Name, p.SpecHash, p.GreenflowVersion, p.Commit, p.Seed = e.Name, e.SpecHash, e.GreenflowVersion, e.GitCommit, e.Seed
		p.Machine, p.Spec = rawJSON(e.Environment), rawJSON(e.Spec)
		switch p.Commit {
		case "", "unknown":
			p.Commit, p.CommitNote = "unknown", results.CommitUnknownNote
		}
	}
	runs, err := s.Runs(ctx, experimentID)
	if err != nil {
		return p, err
	}
	if len(runs) == 0 && len(p.Missing) > 0 {
		return p, fmt.Errorf("provenance of experiment %s: %w", experimentID, ErrNotFound)
	}
	seen := map[string]bool{}
	for _, r := range runs {
		if seen[r.ConfigHash] {
			continue
		}
		seen[r.ConfigHash] = true
		var cfg struct {
			Meters json.RawMessage `json:"meters"`
		}
		_ = json.Unmarshal([]byte(r.Config), &cfg)
		p.Meters = append(p.Meters, results.MeterProvenance{ConfigHash: r.ConfigHash, Requested: cfg.Meters,
			EffectiveNote: results.EffectiveMetersNote})
	}
	sort.Slice(p.Meters, func(i, j int) bool { return p.Meters[i].ConfigHash < p.Meters[j].ConfigHash })
	return p, nil
}

// rawJSON is text as a JSON value when it is one, else nothing.
func rawJSON(text string) json.RawMessage {
	if text == "" || !json.Valid([]byte(text)) {
		return nil
	}
	return json.RawMessage(text)
}
