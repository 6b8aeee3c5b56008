package collector

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/store"
)

// records are the collector's rows beside the samples: the effective meter
// configuration of each run (run_meters), the holes in the data (gaps) and
// the power-model fits (power_calibrations). They are few, so they wait in
// memory — bounded by maxRecords, beyond which the oldest are dropped and
// logged — and are written every FlushInterval until ClickHouse takes them.
// A gap is recorded while ClickHouse is down (samples dropped past the
// spool bound are the usual case) and written once it is back. With a spool
// directory the unwritten records are also kept in a file there
// (records.json, replaced on every change), so a collector restarted — even
// after kill -9 — writes them still; without one they are lost with it.
type records struct {
	path   string // the spool's records file; "" without a spool
	mu     sync.Mutex
	meters []store.RunMeter
	gaps   []store.Gap
	fits   []store.PowerCalibration
	// open are the gaps still growing, by (node, source, reason): a gap
	// whose next stretch starts within its slack is extended (written again
	// with the same start and a later end; readers take the largest end).
	open    map[gapKey]*store.Gap
	dropped int
	saveErr error // the last save's failure, logged by flush
}

type gapKey struct{ node, source, reason string }

// maxRecords bounds each kind of record waiting for ClickHouse.
const maxRecords = 10_000

func newRecords() *records { return &records{open: map[gapKey]*store.Gap{}} }

// savedRecords is the records file.
type savedRecords struct {
	Meters []store.RunMeter         `json:"meters,omitempty"`
	Gaps   []store.Gap              `json:"gaps,omitempty"`
	Fits   []store.PowerCalibration `json:"fits,omitempty"`
}

// load takes over the records a previous run of this instance left in
// the spool directory; an unreadable file is reported and set aside.
func (r *records) load(spoolDir string, logger *zap.Logger) {
	r.path = filepath.Join(spoolDir, "records.json")
	b, err := os.ReadFile(r.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			logger.Error("records file unreadable; its records are lost", zap.String("path", r.path), zap.Error(err))
		}
		return
	}
	var s savedRecords
	if err := json.Unmarshal(b, &s); err != nil {
		logger.Error("records file undecodable; its records are lost", zap.String("path", r.path), zap.Error(err))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.meters, r.gaps, r.fits = s.Meters, s.Gaps, s.Fits
	if n := len(s.Meters) + len(s.Gaps) + len(s.Fits); n > 0 {
		logger.Info("records of a previous run will be written", zap.Int("records", n))
	}
}

// saveLocked replaces the records file with what is unwritten (removes it
// when nothing is). A failure only costs durability across a restart.
func (r *records) saveLocked() {
	if r.path == "" {
		return
	}
	if len(r.meters)+len(r.gaps)+len(r.fits) == 0 {
		_ = os.Remove(r.path)
		return
	}
	b, err := json.Marshal(savedRecords{Meters: r.meters, Gaps: r.gaps, Fits: r.fits})
	if err == nil {
		err = writeFileSync(r.path, b)
	}
	r.saveErr = err
}

// addMeters queues effective meter configurations.
func (r *records) addMeters(rows ...store.RunMeter) {
	if len(rows) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.meters = appendBounded(r.meters, rows, &r.dropped)
	r.saveLocked()
}

// addFit queues a power calibration.
func (r *records) addFit(f store.PowerCalibration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fits = appendBounded(r.fits, []store.PowerCalibration{f}, &r.dropped)
	r.saveLocked()
}

// addGap records that node's samples from source are missing or uncounted
// over [fromMs, toMs]. A gap of the same node, source and reason that ended
// no more than slackMs before fromMs is extended instead.
func (r *records) addGap(g store.Gap, slackMs int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := gapKey{g.Node, g.Source, g.Reason}
	if cur, ok := r.open[k]; ok && g.FromMs <= cur.ToMs+slackMs && g.ToMs >= cur.FromMs {
		cur.ToMs = max(cur.ToMs, g.ToMs)
		cur.Samples += g.Samples
		g = *cur
	} else {
		if len(r.open) >= maxRecords {
			clear(r.open) // only extension is lost: a new row per stretch
		}
		cp := g
		r.open[k] = &cp
	}
	r.gaps = appendBounded(r.gaps, []store.Gap{g}, &r.dropped)
	r.saveLocked()
}

// droppedSamples records the samples the writer dropped as gaps: per node
// and meter, one gap per stretch of consecutive readings that lost rows,
// from the start of the first one's interval to the last one's time,
// counting those readings (a reading whose rows were split between a kept
// and a dropped batch is among them: its node total may be stored while
// its parts are not).
func (r *records) droppedSamples(rows []store.Sample, collector string) {
	type key struct{ node, source string }
	readings := map[key]map[int64]int64{} // ts → interval
	for _, s := range rows {
		k := key{s.Node, s.Source}
		if readings[k] == nil {
			readings[k] = map[int64]int64{}
		}
		readings[k][s.TsMs] = max(readings[k][s.TsMs], int64(s.IntervalMs))
	}
	for k, byTs := range readings {
		ts := slices.Sorted(maps.Keys(byTs))
		add := func(from, to int64, n uint64) {
			r.addGap(store.Gap{Node: k.node, Source: k.source, FromMs: from, ToMs: to, Samples: n, Reason: store.GapSpoolFull,
				Detail: "samples dropped: pending buffer or backlog full", Collector: collector}, 0)
		}
		from, last, n := ts[0]-byTs[ts[0]], ts[0], uint64(1)
		for _, t := range ts[1:] {
			if t-byTs[t] > last { // a reading in between was kept
				add(from, last, n)
				from, n = t-byTs[t], 0
			}
			last = t
			n++
		}
		add(from, last, n)
	}
}

func appendBounded[T any](list, add []T, dropped *int) []T {
	list = append(list, add...)
	if over := len(list) - maxRecords; over > 0 {
		*dropped += over
		list = slices.Delete(list, 0, over)
	}
	return list
}

// recordStore is where records go.
type recordStore interface {
	InsertRunMeters(ctx context.Context, rows []store.RunMeter) error
	InsertGaps(ctx context.Context, gaps []store.Gap) error
	InsertPowerCalibrations(ctx context.Context, fits []store.PowerCalibration) error
}

// flush writes what is queued; what ClickHouse does not take stays queued.
func (r *records) flush(ctx context.Context, st recordStore, logger *zap.Logger) error {
	r.mu.Lock()
	meters, gaps, fits, dropped, saveErr := r.meters, r.gaps, r.fits, r.dropped, r.saveErr
	r.meters, r.gaps, r.fits, r.dropped, r.saveErr = nil, nil, nil, 0, nil
	r.mu.Unlock()
	if dropped > 0 {
		logger.Error("records dropped: ClickHouse unreachable for too long", zap.Int("records", dropped))
	}
	if saveErr != nil {
		logger.Warn("records file not written; unwritten records would not survive a restart", zap.Error(saveErr))
	}
	if len(meters)+len(gaps)+len(fits) == 0 {
		return nil
	}
	var errs []error
	if err := st.InsertRunMeters(ctx, meters); err != nil {
		errs = append(errs, err)
		r.requeue(func() { r.meters = appendBounded(meters, r.meters, &r.dropped) })
	}
	if err := st.InsertGaps(ctx, gaps); err != nil {
		errs = append(errs, err)
		r.requeue(func() { r.gaps = appendBounded(gaps, r.gaps, &r.dropped) })
	}
	if err := st.InsertPowerCalibrations(ctx, fits); err != nil {
		errs = append(errs, err)
		r.requeue(func() { r.fits = appendBounded(fits, r.fits, &r.dropped) })
	}
	r.requeue(r.saveLocked) // what is left, or nothing
	return errors.Join(errs...)
}

func (r *records) requeue(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

// runRecords writes the records every FlushInterval until ctx ends, then
// once more within the writer's drain bound.
func (c *Collector) runRecords(ctx context.Context) error {
	t := c.clock.NewTicker(c.cfg.FlushInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
			defer cancel()
			if err := c.records.flush(dctx, c.recStore, c.logger); err != nil && c.records.path != "" {
				c.logger.Warn("records not written at shutdown; kept in the spool for the next start", zap.Error(err))
			} else if err != nil {
				c.logger.Warn("records not written at shutdown; they are lost (no spool directory)", zap.Error(err))
			}
			return nil
		case <-t.C():
		}
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
		err := c.records.flush(wctx, c.recStore, c.logger)
		cancel()
		if (err != nil) != failing {
			failing = err != nil
			if failing {
				c.logger.Warn("records not written; retrying", zap.Error(err))
			} else {
				c.logger.Info("records written again")
			}
		}
	}
}
