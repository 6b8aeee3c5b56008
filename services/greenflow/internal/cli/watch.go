package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
)

// ErrTooManyRuns guards against accidental huge sweeps.
var ErrTooManyRuns = errors.New("sweep too large")

// NewExperimentID names an experiment: its name, UTC time and a random suffix.
func NewExperimentID(name string, now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", name, now.UTC().Format("20060102-150405"), hex.EncodeToString(b[:]))
}

// Prepare parses and validates a spec with overrides and returns the resolved
// document to submit. Nothing is queued when it fails.
func Prepare(data []byte, sets []string, yes bool) (*spec.Experiment, string, int, error) {
	e, err := spec.Parse(data, sets)
	if err != nil {
		return nil, "", 0, err
	}
	n, err := e.Count()
	if err != nil {
		return nil, "", 0, err
	}
	if n > spec.MaxRunsWithoutConfirm && !yes {
		return nil, "", n, fmt.Errorf("%w: the spec expands to %d runs (more than %d); pass --yes to submit it anyway", ErrTooManyRuns, n, spec.MaxRunsWithoutConfirm)
	}
	resolved, err := yaml.Marshal(e)
	if err != nil {
		return nil, "", 0, fmt.Errorf("encode resolved spec: %w", err)
	}
	return e, string(resolved), n, nil
}

// Submit publishes an experiment and returns its id.
func Submit(ctx context.Context, b *bus.Bus, e *spec.Experiment, resolved string) (string, error) {
	id := NewExperimentID(e.Metadata.Name, time.Now())
	if err := b.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: resolved, SubmittedBy: "cli"}, "submit:"+id); err != nil {
		return "", err
	}
	return id, nil
}

// Watch prints an experiment's progress until it finishes and returns its
// final state.
func Watch(ctx context.Context, b *bus.Bus, experimentID string, since time.Time, out io.Writer) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	final := ""
	lastProgress := map[string]time.Time{}
	phaseEnd := map[string]int64{}
	phaseStart := map[string]int64{}
	start := time.Now()
	stamp := func() string { return fmt.Sprintf("[%6.1fs]", time.Since(start).Seconds()) }
	fn := func(d bus.Delivery) {
		if d.Headers.Get(bus.HeaderExperiment) != experimentID {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch m := d.Msg.(type) {
		case *events.ExperimentState:
			fmt.Fprintf(out, "%s experiment %s: %s (%d/%d runs done, %d failed)%s\n", stamp(), m.ExperimentID, m.State, m.RunsDone, m.RunsTotal, m.RunsFailed,
				reasonSuffix(m.Reason))
			if m.State == "done" || m.State == "failed" || m.State == "cancelled" {
				final = m.State
				cancel()
			}
		case *events.RunState:
			phaseStart[m.RunID], phaseEnd[m.RunID] = m.TsMs, m.PhaseEndMs
			dur := ""
			if m.PhaseEndMs > m.TsMs {
				dur = fmt.Sprintf(" for %s", time.Duration(m.PhaseEndMs-m.TsMs)*time.Millisecond)
			}
			fmt.Fprintf(out, "%s   %s %-12s%s%s\n", stamp(), shortRun(m.RunID), m.State, dur, reasonSuffix(m.Reason))
		case *events.LoadProgress:
			if time.Since(lastProgress[m.RunID]) < 2*time.Second {
				return
			}
			lastProgress[m.RunID] = time.Now()
			bar := ""
			if s, e := phaseStart[m.RunID], phaseEnd[m.RunID]; e > s {
				frac := min(1, max(0, float64(m.TsMs-s)/float64(e-s)))
				n := int(frac * 20)
				bar = fmt.Sprintf(" [%s%s] %3.0f%% of phase", strings.Repeat("#", n), strings.Repeat(".", 20-n), frac*100)
			}
			fmt.Fprintf(out, "%s   %s load %8.0f msg/s, %d sent%s\n", stamp(), shortRun(m.RunID), m.RatePerSec, m.RecordsSent, bar)
		case *events.RunAnalyzed:
			est := ""
			if m.Estimated {
				est = " (estimated)"
			}
			fmt.Fprintf(out, "%s   %s analyzed: %.2f J SUT, %.1f J node, %d events, %.1f µJ/event%s\n", stamp(), shortRun(m.RunID), m.EnergyJ,
				m.NodeEnergyJ, m.Events, m.MicroJPerEvent, est)
		}
	}
	err := b.Watch(ctx, since, []events.Type{events.TypeExperimentState, events.TypeRunState, events.TypeLoadProgress, events.TypeRunAnalyzed}, fn)
	mu.Lock()
	defer mu.Unlock()
	if final == "" {
		if err == nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("watch ended before the experiment finished: %w", err)
	}
	return final, nil
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}
