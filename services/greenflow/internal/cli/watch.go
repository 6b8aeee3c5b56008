// Following a submitted experiment: progress lines, then its results.

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
)

// Watch prints an experiment's progress until it finishes and returns its
// final state. With unverified (the log of b: see unverifiedReport), once
// an event has failed the trust file's check it gives up when no event of
// the experiment passes it for unverified.waitFor: the one it waits for may
// be among those skipped.
func Watch(ctx context.Context, b *bus.Bus, experimentID string, since time.Time, out io.Writer, unverified *unverifiedReport) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	final := ""
	verified := make(chan struct{}, 1) // an event of the experiment passed
	var gaveUp error
	if unverified != nil {
		unverified.watch(experimentID)
		stopped := make(chan struct{})
		defer func() { cancel(); <-stopped }()
		go func() {
			defer close(stopped)
			if err := unverified.wait(ctx, verified, experimentID); err != nil {
				mu.Lock()
				gaveUp = err
				mu.Unlock()
				cancel()
			}
		}()
	}
	lastProgress := map[string]time.Time{}
	phaseEnd := map[string]int64{}
	phaseStart := map[string]int64{}
	start := time.Now()
	stamp := func() string { return fmt.Sprintf("[%6.1fs]", time.Since(start).Seconds()) }
	fn := func(d bus.Delivery) {
		if d.Headers.Get(bus.HeaderExperiment) != experimentID {
			return
		}
		select {
		case verified <- struct{}{}:
		default:
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
		if gaveUp != nil {
			return "", gaveUp
		}
		if err == nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("watch ended before the experiment finished: %w", err)
	}
	return final, nil
}

// unverifiedReport is the log of a watching CLI's bus. The bus skips a
// lifecycle message whose signature does not pass the check against the
// trust file (bus.ErrUnverified) and says so only in a warning, which the
// CLI discarded: with a trust file of other keys --watch skipped every
// event of the experiment without a word and waited forever for an end it
// had dropped. This reports the first on stderr, naming the trust file and
// what failed (the event, its signer's key), and counts the rest; Watch
// gives up when, after an event of its own experiment failed the check,
// nothing of that experiment passes it for waitFor. Another experiment's
// events failing the check start no wait: its own may all pass.
type unverifiedReport struct {
	trustFile string
	waitFor   time.Duration
	stderr    io.Writer
	once      sync.Once
	n         atomic.Int64

	watched atomic.Pointer[string] // the experiment Watch follows
	own     chan struct{}          // closed at the first of its events failing the check
	ownOnce sync.Once
}

var _ zapcore.Core = (*unverifiedReport)(nil)

func newUnverifiedReport(trustFile string, wait time.Duration, stderr io.Writer) *unverifiedReport {
	return &unverifiedReport{trustFile: trustFile, waitFor: wait, stderr: stderr, own: make(chan struct{})}
}

func (u *unverifiedReport) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (u *unverifiedReport) With([]zapcore.Field) zapcore.Core { return u }

func (u *unverifiedReport) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if u.Enabled(e.Level) {
		return ce.AddCore(e, u)
	}
	return ce
}

// Write takes the bus's warnings; only those of a message that failed the
// check count (their error is a bus.ErrUnverified), whatever their words.
func (u *unverifiedReport) Write(_ zapcore.Entry, fields []zapcore.Field) error {
	experiment := ""
	for _, f := range fields {
		if f.Key == bus.LogFieldExperiment && f.Type == zapcore.StringType {
			experiment = f.String
		}
	}
	for _, f := range fields {
		err, ok := f.Interface.(error)
		if f.Type != zapcore.ErrorType || !ok || !errors.Is(err, bus.ErrUnverified) {
			continue
		}
		u.n.Add(1)
		if w := u.watched.Load(); w != nil && *w == experiment {
			u.ownOnce.Do(func() { close(u.own) })
		}
		u.once.Do(func() {
			fmt.Fprintf(u.stderr, "greenflow: skipped an event that fails the check against the NATS trust file %s: %v\n"+
				"  a watch shows only what the contract's producers signed: is %s this deployment's trust file "+
				"(the %s written beside its seeds; --nats-trust-file names another)? Events failing it are skipped from here on.\n",
				u.trustFile, err, u.trustFile, bus.TrustFileName)
		})
	}
	return nil
}

func (u *unverifiedReport) Sync() error { return nil }

// watch names the experiment whose failing events start wait's clock; call
// it before the watch begins.
func (u *unverifiedReport) watch(id string) { u.watched.Store(&id) }

// wait returns nil when ctx ends, or an error once an event of experiment
// id has failed the check and no event of it has passed (a value on
// verified) for u.waitFor.
func (u *unverifiedReport) wait(ctx context.Context, verified <-chan struct{}, id string) error {
	select {
	case <-u.own:
	case <-ctx.Done():
		return nil
	}
	t := time.NewTimer(u.waitFor)
	defer t.Stop()
	for {
		select {
		case <-verified:
			t.Reset(u.waitFor)
		case <-t.C:
			return fmt.Errorf("watch: no event of experiment %s passed the check against the NATS trust file %s for %s, and %d failed it (see above): "+
				"the experiment goes on; follow it with 'greenflow status %s', and give --watch the trust file of this deployment",
				id, u.trustFile, u.waitFor, u.n.Load(), id)
		case <-ctx.Done():
			return nil
		}
	}
}

// watchAndReport follows the experiment to its end, then prints its results
// from the ClickHouse that dsnNow gives at that moment.
func watchAndReport(ctx context.Context, b *bus.Bus, dsnNow func() string, id string, since time.Time, stdout io.Writer, unverified *unverifiedReport) error {
	final, err := Watch(ctx, b, id, since, stdout, unverified)
	if err != nil {
		return err
	}
	dsn := dsnNow()
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
