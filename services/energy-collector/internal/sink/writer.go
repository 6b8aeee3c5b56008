package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/store"
)

// Store is where batches go: ClickHouse (*store.Store) in production.
type Store interface {
	InsertSamples(ctx context.Context, samples []store.Sample) error
	InsertRunMetrics(ctx context.Context, points []store.RunMetric) error
}

var _ Store = (*store.Store)(nil)

// Config bounds the writer.
type Config struct {
	BatchSize     int           // rows per insert
	FlushInterval time.Duration // longest a row waits for its batch
	WriteTimeout  time.Duration // one insert
	MaxPending    int           // rows waiting for their batch; more are dropped
	DrainTimeout  time.Duration // how long Run keeps writing after its context ends
	// RetryMin and RetryMax bound the backoff between attempts to write
	// the queue's oldest batch while the store fails. Defaults 100ms, 5s.
	RetryMin, RetryMax time.Duration
}

// Writer batches rows and writes them to a Store; batches the store does
// not take go to a Queue and are retried, oldest first, before anything
// newer is written, so rows reach the store in order. AddSamples returns a
// Ticket that tells when its rows are durable (written, or in a spool).
// Add*, FlushSoon and Check are safe for concurrent use; Run is called once.
type Writer struct {
	cfg    Config
	store  Store
	queue  Queue
	logger *zap.Logger
	clock  clock.WithTicker

	mu       sync.Mutex
	samples  []store.Sample
	spans    []span // tickets of samples, in order
	metrics  []store.RunMetric
	full     chan struct{}
	storeErr error // the last write's failure; nil after a success
	queueErr error // the last backlog push's failure; nil after a success
	dropped  int   // since the last drop report
	lastDrop time.Time
	onDrop   func([]store.Sample)

	qrows int // the queue's rows, for the gauge (the queue is Run's alone)

	written, dropTotal, failures prometheus.Counter
	backlog                      prometheus.GaugeFunc
	retryAt                      time.Time
	backoff                      time.Duration
	lastFailLog                  time.Time
}

// Metric names.
const (
	MetricWritten  = "greenflow_energy_collector_samples_written_total"
	MetricDropped  = "greenflow_energy_collector_samples_dropped_total"
	MetricFailures = "greenflow_energy_collector_write_failures_total"
	MetricBacklog  = "greenflow_energy_collector_backlog_rows"
)

// Deps are a writer's collaborators.
type Deps struct {
	Store    Store
	Queue    Queue // the backlog; the writer owns it and closes it when Run returns
	Logger   *zap.Logger
	Registry prometheus.Registerer // may be nil
	Clock    clock.WithTicker      // nil: the real clock
	// OnDrop, when set, is told which samples were dropped (pending buffer
	// or backlog full, or left in a memory backlog at shutdown), so that
	// the hole is recorded where the data is. It is called with the
	// writer's lock held: it must not call the writer.
	OnDrop func(dropped []store.Sample)
}

// NewWriter returns a writer. No I/O.
func NewWriter(cfg Config, d Deps) (*Writer, error) {
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(5*time.Second, cfg.RetryMin)
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	w := &Writer{cfg: cfg, store: d.Store, queue: d.Queue, logger: d.Logger, clock: d.Clock, full: make(chan struct{}, 1), onDrop: d.OnDrop,
		written:   prometheus.NewCounter(prometheus.CounterOpts{Name: MetricWritten, Help: "Rows (samples and run metrics) written to ClickHouse."}),
		dropTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricDropped, Help: "Rows lost: the pending buffer or the backlog (memory or spool) was full, or a spooled batch was unreadable."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: MetricFailures, Help: "Failed batch writes (the batch is kept and retried)."}),
	}
	w.backlog = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricBacklog, Help: "Rows waiting in the backlog (memory or spool) for ClickHouse."},
		func() float64 { return float64(w.queueRows()) })
	if d.Registry != nil {
		for _, c := range []prometheus.Collector{w.written, w.dropTotal, w.failures, w.backlog} {
			if err := d.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register writer metrics: %w", err)
			}
		}
	}
	return w, nil
}

// queueRows reads the backlog size for the gauge; the queue itself is only
// touched by Run's goroutine, so the count is copied under mu.
func (w *Writer) queueRows() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.qrows
}

func (w *Writer) setQueueRows() {
	n := w.queue.Rows()
	w.mu.Lock()
	w.qrows = n
	w.mu.Unlock()
}

// BacklogRows is the number of rows waiting in the backlog.
func (w *Writer) BacklogRows() int { return w.queueRows() }

// AddSamples queues samples for the next batch. The ticket tells when they
// are durable — written, or in a spool — or that some were dropped.
func (w *Writer) AddSamples(s []store.Sample) *Ticket {
	t := newTicket(len(s))
	if len(s) == 0 {
		return t
	}
	w.mu.Lock()
	room := w.cfg.MaxPending - len(w.samples) - len(w.metrics)
	if room < len(s) {
		w.dropLocked(len(s) - max(room, 0))
		w.reportDropLocked(s[max(room, 0):])
		t.lose()
		s = s[:max(room, 0)]
	}
	w.samples = append(w.samples, s...)
	w.spans = append(w.spans, span{t, len(s)})
	n := len(w.samples)
	w.mu.Unlock()
	if n >= w.cfg.BatchSize {
		w.FlushSoon()
	}
	return t
}

// FlushSoon asks Run to write what is pending now rather than at the next
// FlushInterval: for a caller waiting on a ticket.
func (w *Writer) FlushSoon() {
	select {
	case w.full <- struct{}{}:
	default:
	}
}

// Check implements service.Checker: it fails while rows can be made durable
// nowhere — ClickHouse writes fail and there is no spool, or the spool
// fails too.
func (w *Writer) Check() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.storeErr == nil:
		return nil
	case !w.queue.Durable():
		return fmt.Errorf("clickhouse writes failing and no spool directory to keep rows in: %w", w.storeErr)
	case w.queueErr != nil:
		return fmt.Errorf("clickhouse writes failing (%v) and the spool too: %w", w.storeErr, w.queueErr)
	}
	return nil
}

// AddMetrics queues run metric points for the next batch.
func (w *Writer) AddMetrics(m []store.RunMetric) {
	if len(m) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	room := w.cfg.MaxPending - len(w.samples) - len(w.metrics)
	if room < len(m) {
		w.dropLocked(len(m) - max(room, 0))
		m = m[:max(room, 0)]
	}
	w.metrics = append(w.metrics, m...)
}

// dropLocked counts lost rows and reports them, at most every 10 s.
func (w *Writer) dropLocked(n int) {
	if n <= 0 {
		return
	}
	w.dropTotal.Add(float64(n))
	w.dropped += n
	if now := w.clock.Now(); now.Sub(w.lastDrop) >= 10*time.Second {
		w.logger.Error("rows dropped: buffer or backlog full", zap.Int("rows", w.dropped), zap.Int("max_pending", w.cfg.MaxPending))
		w.dropped, w.lastDrop = 0, now
	}
}

// reportDropLocked tells OnDrop which samples were dropped.
func (w *Writer) reportDropLocked(dropped []store.Sample) {
	if w.onDrop != nil && len(dropped) > 0 {
		w.onDrop(dropped)
	}
}

// Run writes batches until ctx ends, then keeps writing for up to
// DrainTimeout and closes the queue: a spool keeps what is left for the
// next start; what a memory queue still holds is counted as dropped.
func (w *Writer) Run(ctx context.Context) error {
	tick := w.clock.NewTicker(w.cfg.FlushInterval)
	defer tick.Stop()
	retry := w.clock.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return w.drain()
		case <-tick.C():
		case <-w.full:
		case <-retry.C():
		}
		w.flush(ctx, false)
		if w.queue.Len() > 0 {
			retry.Reset(w.retryAt.Sub(w.clock.Now()))
		}
	}
}

func (w *Writer) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.DrainTimeout)
	defer cancel()
	w.backoff = 0
	for {
		w.flush(ctx, true)
		w.mu.Lock()
		pending := len(w.samples) + len(w.metrics)
		w.mu.Unlock()
		if (w.queue.Len() == 0 && pending == 0) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-w.clock.After(w.retryAt.Sub(w.clock.Now())):
		}
	}
	left := w.queue.Rows()
	spooled := w.queue.Durable()
	if !spooled {
		for w.queue.Len() > 0 {
			if b, err := w.queue.Peek(); err == nil {
				loseAll(b.tickets)
				w.mu.Lock()
				w.reportDropLocked(b.Samples)
				w.mu.Unlock()
			}
			_ = w.queue.Pop()
		}
	}
	w.mu.Lock()
	loseAll(w.spans) // left pending after the drain timeout
	w.spans = nil
	w.mu.Unlock()
	switch {
	case left == 0:
	case spooled:
		w.logger.Warn("clickhouse unreachable at shutdown; rows kept in the spool for the next start", zap.Int("rows", left))
	default:
		w.mu.Lock()
		w.dropTotal.Add(float64(left))
		w.mu.Unlock()
		w.logger.Error("clickhouse unreachable at shutdown; rows lost", zap.Int("rows", left))
	}
	if err := w.queue.Close(); err != nil {
		return fmt.Errorf("close backlog: %w", err)
	}
	return nil
}

// flush cuts the pending rows into batches and writes them, through the
// queue whenever it is not empty so order is kept; then it retries the
// queue when due (always when force).
func (w *Writer) flush(ctx context.Context, force bool) {
	w.mu.Lock()
	samples, spans, metrics := w.samples, w.spans, w.metrics
	w.samples, w.spans, w.metrics = nil, nil, nil
	w.mu.Unlock()

	var batches []Batch
	for len(samples) > 0 {
		n := min(len(samples), w.cfg.BatchSize)
		var head []span
		head, spans = cutSpans(spans, n)
		batches = append(batches, Batch{Samples: samples[:n:n], tickets: head})
		samples = samples[n:]
	}
	if len(metrics) > 0 {
		batches = append(batches, Batch{Metrics: metrics})
	}
	for _, b := range batches {
		if w.queue.Len() == 0 && (force || !w.clock.Now().Before(w.retryAt)) {
			if err := w.write(ctx, b); err == nil {
				settleAll(b.tickets)
				continue
			}
		}
		w.enqueue(b)
	}
	if w.queue.Len() > 0 && (force || !w.clock.Now().Before(w.retryAt)) {
		w.retryQueue(ctx)
	}
	w.setQueueRows()
}

func (w *Writer) enqueue(b Batch) {
	err := w.queue.Push(b)
	w.mu.Lock()
	w.queueErr = err
	if err != nil {
		w.dropLocked(b.Rows())
		w.reportDropLocked(b.Samples)
	}
	w.mu.Unlock()
	switch {
	case err != nil:
		loseAll(b.tickets)
		if !errors.Is(err, ErrFull) {
			w.logger.Error("backlog write failed", zap.Error(err))
		}
	case w.queue.Durable():
		settleAll(b.tickets)
	}
}

// retryQueue writes the queue's batches, oldest first, until one fails.
func (w *Writer) retryQueue(ctx context.Context) {
	for w.queue.Len() > 0 && ctx.Err() == nil {
		b, err := w.queue.Peek()
		if err != nil {
			if errors.Is(err, ErrEmpty) {
				return
			}
			w.logger.Error("spooled batch unreadable; dropped", zap.Error(err))
			w.mu.Lock()
			w.dropLocked(max(w.queue.Rows()-w.rowsAfterHead(), 0))
			w.mu.Unlock()
			_ = w.queue.Pop()
			continue
		}
		if err := w.write(ctx, b); err != nil {
			return
		}
		settleAll(b.tickets)
		if err := w.queue.Pop(); err != nil {
			w.logger.Error("backlog pop failed", zap.Error(err))
			return
		}
	}
}

// rowsAfterHead is the queue's rows without its oldest batch, whose row
// count the unreadable file's name still gives.
func (w *Writer) rowsAfterHead() int {
	if d, ok := w.queue.(*Dir); ok && len(d.files) > 0 {
		return d.rows - d.files[0].rows
	}
	return w.queue.Rows()
}

// write inserts one batch and manages the backoff. The insert is not
// cancelled with ctx: an insert cut short at shutdown may still land in
// ClickHouse, and retrying it would write the batch twice. Only
// WriteTimeout bounds it.
func (w *Writer) write(ctx context.Context, b Batch) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.WriteTimeout)
	defer cancel()
	var err error
	if len(b.Samples) > 0 {
		err = w.store.InsertSamples(wctx, b.Samples)
	} else if len(b.Metrics) > 0 {
		err = w.store.InsertRunMetrics(wctx, b.Metrics)
	}
	w.mu.Lock()
	w.storeErr = err
	w.mu.Unlock()
	if err != nil {
		w.failures.Inc()
		first := w.backoff == 0
		w.backoff = min(max(2*w.backoff, w.cfg.RetryMin), w.cfg.RetryMax)
		w.retryAt = w.clock.Now().Add(w.backoff)
		if now := w.clock.Now(); first || now.Sub(w.lastFailLog) >= 30*time.Second {
			w.lastFailLog = now
			w.logger.Warn("batch write failed; rows kept for retry", zap.Int("rows", b.Rows()), zap.Int("backlog_rows", w.queue.Rows()),
				zap.Duration("retry_in", w.backoff), zap.Error(err))
		}
		return err
	}
	if w.backoff > 0 {
		w.logger.Info("batch writes recovered", zap.Int("backlog_rows", w.queue.Rows()))
	}
	w.backoff, w.retryAt = 0, time.Time{}
	w.written.Add(float64(b.Rows()))
	return nil
}
