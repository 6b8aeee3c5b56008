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
	noRecord := errors.Is(err, ErrNotFound)
	switch {
	case noRecord:
		p.Missing = append(p.Missing, "the experiment record (spec, spec hash, version, commit, machine, seed)")
	case err != nil:
		return p, err
	default:
		p.Name, p.SpecHash, p.GreenflowVersion, p.Commit, p.Seed = e.Name, e.SpecHash, e.GreenflowVersion, e.GitCommit, e.Seed
		p.Machine, p.Spec = machineJSON(e.Environment), rawJSON(e.Spec)
		var env struct {
			CommitSource string                     `json:"commit_source"`
			Testbed      *results.TestbedProvenance `json:"testbed"`
			TestbedError string                     `json:"testbed_error"`
		}
		_ = json.Unmarshal([]byte(e.Environment), &env)
		p.CommitSource, p.Testbed = env.CommitSource, env.Testbed
		if p.Testbed != nil {
			for _, n := range p.Testbed.Nodes {
				if n.FactsMissing != "" {
					p.Missing = append(p.Missing, results.TestbedFactsMissing(n))
				}
			}
		}
		if env.TestbedError != "" {
			p.Missing = append(p.Missing, results.TestbedUnreadableNote+env.TestbedError+")")
		}
		switch p.Commit {
		case "", "unknown":
			p.Commit, p.CommitNote = "unknown", results.CommitUnknownNote
		}
	}
	runs, err := s.Runs(ctx, experimentID)
	if err != nil {
		return p, err
	}
	if len(runs) == 0 && noRecord {
		return p, fmt.Errorf("provenance of experiment %s: %w", experimentID, ErrNotFound)
	}
	applied, err := s.effectiveMeters(ctx, experimentID, runs)
	if err != nil {
		return p, err
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
		m := results.MeterProvenance{ConfigHash: r.ConfigHash, Requested: cfg.Meters, EffectiveNote: results.EffectiveMetersNote}
		if eff, ok := applied[r.ConfigHash]; ok {
			m.Effective, m.EffectiveNote = eff, ""
		}
		p.Meters = append(p.Meters, m)
	}
	sort.Slice(p.Meters, func(i, j int) bool { return p.Meters[i].ConfigHash < p.Meters[j].ConfigHash })
	return p, nil
}

// effectiveMeter is one configuration a collector applied to a
// configuration's runs (store.RunMeter without the run and time).
type effectiveMeter struct {
	Node       string          `json:"node"`
	Source     string          `json:"source"`
	IntervalMs int64           `json:"interval_ms"`
	Meter      string          `json:"meter"`
	Estimated  bool            `json:"estimated"`
	Label      string          `json:"label,omitempty"`
	Model      json.RawMessage `json:"model,omitempty"`
	Note       string          `json:"note,omitempty"`
}

// effectiveMeters is, per configuration, the distinct meter
// configurations the collectors recorded applying to its runs (run_meters),
// as JSON.
func (s *Store) effectiveMeters(ctx context.Context, experimentID string, runs []Run) (map[string]json.RawMessage, error) {
	rows, err := s.RunMeters(ctx, experimentID)
	if err != nil {
		return nil, err
	}
	hashOf := map[string]string{}
	for _, r := range runs {
		hashOf[r.RunID] = r.ConfigHash
	}
	byConfig := map[string][]effectiveMeter{}
	seen := map[string]bool{}
	for _, m := range rows {
		h := hashOf[m.RunID]
		e := effectiveMeter{Node: m.Node, Source: m.SourceID, IntervalMs: m.IntervalMs, Meter: m.Meter, Estimated: m.Estimated, Label: m.Label,
			Model: rawJSON(m.Model), Note: m.Note}
		b, _ := json.Marshal(e)
		if key := h + "\x00" + string(b); !seen[key] {
			seen[key] = true
			byConfig[h] = append(byConfig[h], e)
		}
	}
	out := map[string]json.RawMessage{}
	for h, list := range byConfig {
		b, err := json.Marshal(list)
		if err != nil {
			return nil, err
		}
		out[h] = b
	}
	return out, nil
}

// rawJSON is text as a JSON value when it is one, else nothing.
func rawJSON(text string) json.RawMessage {
	if text == "" || !json.Valid([]byte(text)) {
		return nil
	}
	return json.RawMessage(text)
}

// machineJSON is the scheduler's environment record without the testbed
// reservation, which Provenance.Testbed (or Missing) carries.
func machineJSON(env string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(env), &m) != nil {
		return rawJSON(env)
	}
	if _, ok := m["testbed"]; !ok {
		if _, ok := m["testbed_error"]; !ok {
			return rawJSON(env)
		}
	}
	delete(m, "testbed")
	delete(m, "testbed_error")
	b, err := json.Marshal(m)
	if err != nil {
		return rawJSON(env)
	}
	return b
}
