// Following a submitted experiment: progress lines, then its results.

package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
)

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
			if events.ExperimentFinal(m.State) {
				final = m.State
				cancel()
			}
		case *events.RunState:
			phaseStart[m.RunID], phaseEnd[m.RunID] = m.TsMs, m.PhaseEndMs
			dur := ""
			if m.PhaseEndMs > m.TsMs {
				dur = fmt.Sprintf(" for %s", time.Duration(m.PhaseEndMs-m.TsMs)*time.Millisecond)
			}
			fmt.Fprintf(out, "%s   %s %-12s%s%s\n", stamp(), runcharts.ShortRun(m.RunID), m.State, dur, reasonSuffix(m.Reason))
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
			fmt.Fprintf(out, "%s   %s load %8.0f msg/s, %d sent%s\n", stamp(), runcharts.ShortRun(m.RunID), m.RatePerSec, m.RecordsSent, bar)
		case *events.RunAnalyzed:
			est := ""
			if m.Estimated {
				est = " (estimated)"
			}
			fmt.Fprintf(out, "%s   %s analyzed: %.2f J SUT, %.1f J node, %d events, %.1f µJ/event%s\n", stamp(), runcharts.ShortRun(m.RunID), m.EnergyJ,
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

func watchAndReport(ctx context.Context, b *bus.Bus, dsn, id string, since time.Time, stdout io.Writer) error {
	final, err := Watch(ctx, b, id, since, stdout)
	if err != nil {
		return err
	}
	if dsn == "" {
		fmt.Fprintln(stdout, "no ClickHouse DSN known: run 'greenflow results' with --clickhouse-dsn")
		return nil
	}
	st, err := store.OpenReadOnly(ctx, dsn, zap.NewNop())
	if err != nil {
		return err
	}
	defer st.Close()
	rows, err := report.LoadResults(ctx, st, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nResults of %s (measured window only):\n", id)
	if err := report.WriteResults(stdout, "table", rows); err != nil {
		return err
	}
	if err := report.WriteCapacity(ctx, stdout, st, id); err != nil {
		return err
	}
	if final != events.ExperimentStateDone {
		return fmt.Errorf("experiment %s ended %s", id, final)
	}
	return nil
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}
