package provisioner

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// teardown records that the run's teardown is wanted; the reconciler of
// an instance that can remove it (any one for a cluster run, one on its
// node for a local run) carries it out and reports. A run with no record
// anywhere is reported lost, never torn down cleanly: nothing shows its
// system under test ran throughout. A repeated teardown of a torn-down run
// gets the same report again.
func (p *Provisioner) teardown(ctx context.Context, m *events.RunTeardown) error {
	be, ok := p.backends[m.Backend]
	if !ok {
		return bus.Permanent(fmt.Errorf("backend %q is not enabled in this provisioner", m.Backend))
	}
	entries, err := p.records(ctx, m.Backend, m.RunID)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		created, err := p.recordUnknown(ctx, be, m)
		if err != nil || created {
			p.poke()
			return err
		}
		if entries, err = p.records(ctx, m.Backend, m.RunID); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if e.Rec.State == state.TornDown && e.Rec.Result != nil {
			if err := p.bus.Publish(ctx, *e.Rec.Result, "torn-down:"+m.RunID); err != nil {
				return err
			}
			continue
		}
		if _, err := p.requestTeardown(ctx, e.Key, "teardown command", true, m.Kafka); err != nil {
			return err
		}
	}
	p.poke()
	return nil
}

// records finds the record of a run.
func (p *Provisioner) records(ctx context.Context, backend, runID string) ([]state.Entry, error) {
	be := p.backends[backend]
	e, err := p.store.Get(ctx, be.Key(runID))
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []state.Entry{e}, nil
}

// recordUnknown records the teardown of a run with no record. What of it
// can still be found here (marked processes, its namespace) is removed;
// a local run found only by its markers, or nothing found at all, is
// reported lost. A cluster run whose namespace is there is not: the
// namespace carries all the record would.
func (p *Provisioner) recordUnknown(ctx context.Context, be Backend, m *events.RunTeardown) (bool, error) {
	rec := state.Record{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: m.Backend, State: state.Stopping, Kafka: m.Kafka,
		Teardown: &state.Teardown{RequestedMs: p.clock.Now().UnixMilli(), Cause: "teardown command", Report: true, From: "unknown"}}
	if n, ok := be.(noder); ok {
		rec.Node = n.Node()
	}
	sw, ok := be.(Sweeper)
	if !ok {
		// This instance cannot look (no cluster access): the command comes
		// again, to an instance that can, or is answered lost at the end.
		return false, fmt.Errorf("backend %s is not available in this provisioner to look for run %s", m.Backend, m.RunID)
	}
	all, err := sw.Leftovers(ctx)
	if err != nil {
		return false, fmt.Errorf("look for what is left of run %s: %w", m.RunID, err)
	}
	var found []state.Leftover
	for _, l := range all {
		if l.RunID == m.RunID {
			found = append(found, l)
		}
	}
	where := m.Backend
	if rec.Node != "" {
		where = "node " + rec.Node
	}
	switch {
	case len(found) == 0:
		rec.Teardown.Lost = true
		rec.Teardown.LostReason = fmt.Sprintf("the provisioner has no record of run %s and found nothing of it on %s: it was never provisioned "+
			"by this installation, or its record was lost, so nothing shows its system under test ran throughout", m.RunID, where)
	case found[0].Kind == "namespace":
		rec.Teardown.From = state.Running // the namespace is its record
	default:
		rec.Teardown.Lost = true
		rec.Teardown.LostReason = fmt.Sprintf("the provisioner has no record of run %s, so its system under test was not watched; "+
			"its leftover %s are stopped", m.RunID, found[0].What)
	}
	if rec.Kafka == nil {
		for _, l := range found {
			if l.Kafka != nil {
				rec.Kafka = l.Kafka
			}
		}
	}
	_, created, err := p.store.Create(ctx, be.Key(m.RunID), rec)
	if created {
		p.logger.Warn("teardown of a run with no record", zap.String("run_id", m.RunID), zap.String("backend", m.Backend),
			zap.Bool("lost", rec.Teardown.Lost), zap.Int("leftovers", len(found)))
	}
	return created, err
}

// requestTeardown records that a run's teardown is wanted (once; report
// asks for run.torn_down to be published).
func (p *Provisioner) requestTeardown(ctx context.Context, key, cause string, report bool, kafka *events.Kafka) (state.Entry, error) {
	e, _, err := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		if r.State == state.TornDown {
			return false, nil
		}
		changed := false
		if r.Teardown == nil {
			r.Teardown = &state.Teardown{RequestedMs: p.clock.Now().UnixMilli(), Cause: cause, From: r.State}
			r.State = state.Stopping
			changed = true
		}
		if report && !r.Teardown.Report {
			r.Teardown.Report, changed = true, true
		}
		if r.Kafka == nil && kafka != nil {
			r.Kafka, changed = kafka, true
		}
		return changed, nil
	})
	if err != nil {
		return e, fmt.Errorf("record the teardown of %s: %w", key, err)
	}
	return e, nil
}
