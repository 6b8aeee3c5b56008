// Package processor is the Kafka side of the UC-3 processor: it consumes
// ActivePowerRecords in a consumer group, aggregates them per input
// partition with an aggregate.Engine, and every EmitInterval produces the
// updated aggregates to the output topic and then commits the offsets of the
// records they include.
//
// State is in memory. When a partition is revoked its aggregates are emitted
// and committed first, then dropped; the new owner starts empty from the
// committed offset. Unlike Kafka Streams there is no changelog, so windows
// spanning a rebalance or restart are incomplete — acceptable for measuring
// the cost of the computation, which is what GreenFlow uses it for.
package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/aggregate"
)

const (
	// maxPollRecords bounds one poll, so that rebalances, which wait for
	// the poll loop, are not held up for long.
	maxPollRecords = 10_000
	// maxStatsJSON is a generous size of an output value besides its
	// identifier: field names, two timestamps, a count and four doubles.
	maxStatsJSON = 256
)

// Stats are the processor's running totals.
type Stats struct {
	// Consumed counts input records, including those that did not decode.
	Consumed uint64
	// Emitted counts aggregates acknowledged by the output topic.
	Emitted uint64
	// Late counts records dropped because their windows had all closed.
	Late uint64
	// Invalid counts records dropped for an unusable timestamp.
	Invalid uint64
	// DecodeErrors counts records skipped because they did not decode.
	DecodeErrors uint64
}

// Processor is the UC-3 stream processor. Create it with New and start it
// with Run, once.
type Processor struct {
	cfg     Config
	aggCfg  aggregate.Config
	logger  *zap.Logger
	metrics *metrics
	started atomic.Bool

	consumed, emitted, late, invalid, decodeErrors atomic.Uint64

	// mu serialises the poll loop and the rebalance callbacks, which run on
	// franz-go's goroutine; BlockRebalanceOnPoll already keeps them apart,
	// the lock makes that visible to the reader and the race detector.
	mu      sync.Mutex
	engines map[int32]*aggregate.Engine // by input partition
	updates []aggregate.Update          // reused drain buffer
	fatal   error                       // from a callback, returned by Run
	// outputErr is set once producing failed: from then on nothing is
	// committed, because the lost aggregates hold the uncommitted records.
	outputErr error
	// Decode failures since the last emit, logged once per emit.
	recentDecodeErrors int
	lastDecodeErr      error
}

// Deps are a Processor's collaborators; both may be nil (no logs, metrics
// registered nowhere).
type Deps struct {
	Logger   *zap.Logger
	Registry prometheus.Registerer
}

// New validates cfg and builds a processor; it does no I/O. A
// configuration error names every field at fault (the caller says what it
// was configuring).
func New(cfg Config, d Deps) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	loc, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("time_zone: load %q: %w", cfg.TimeZone, err)
	}
	aggCfg := aggregate.Config{Location: loc, Duration: cfg.WindowDuration, Advance: cfg.WindowAdvance}
	if err := aggCfg.Validate(); err != nil {
		return nil, err
	}
	logger := d.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	m, err := newMetrics(d.Registry)
	if err != nil {
		return nil, err
	}
	cfg.Brokers = append([]string(nil), cfg.Brokers...)
	return &Processor{
		cfg:     cfg,
		aggCfg:  aggCfg,
		logger:  logger.With(zap.String("component", "uc3_processor")),
		metrics: m,
		engines: make(map[int32]*aggregate.Engine),
	}, nil
}

// Stats returns the running totals; it is safe to call at any time.
func (p *Processor) Stats() Stats {
	return Stats{
		Consumed:     p.consumed.Load(),
		Emitted:      p.emitted.Load(),
		Late:         p.late.Load(),
		Invalid:      p.invalid.Load(),
		DecodeErrors: p.decodeErrors.Load(),
	}
}

// Run consumes, aggregates and emits until ctx ends, then emits what is
// pending, commits, and leaves the group within a few seconds. It returns nil
// on a clean cancel and an error if producing the output fails.
func (p *Processor) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("run uc3 processor: already started")
	}
	auth, err := p.cfg.KafkaSASL.Options()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(auth,
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ClientID("greenflow-uc3-processor"),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.InputTopic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		// Kafka Streams' default: a new group reads the topic from the start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Offsets are committed only after the aggregates holding their
		// records have been produced.
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onLost),
		kgo.WithLogger(kgoLogger{p.logger.Named("kgo")}),
	)...)
	if err != nil {
		return fmt.Errorf("create kafka client for %v: %w", p.cfg.Brokers, err)
	}
	p.logger.Info("uc3 processor starting",
		zap.Strings("brokers", p.cfg.Brokers),
		zap.String("input_topic", p.cfg.InputTopic),
		zap.String("output_topic", p.cfg.OutputTopic),
		zap.String("group", p.cfg.Group),
		zap.String("format", string(p.cfg.Format)),
		zap.Duration("emit_interval", p.cfg.EmitInterval),
		zap.String("time_zone", p.cfg.TimeZone),
		zap.Duration("window_duration", p.cfg.WindowDuration),
		zap.Duration("window_advance", p.cfg.WindowAdvance))

	// Output and commits outlive ctx (or a failed loop) by at most
	// DrainTimeout, so that stopping neither cuts an emit short nor hangs on
	// a dead broker.
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stopDrainTimer := context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.DrainTimeout, cancelDrain) })
	defer stopDrainTimer()

	runErr := p.loop(ctx, drainCtx, cl)
	drainTimer := time.AfterFunc(p.cfg.DrainTimeout, cancelDrain)
	defer drainTimer.Stop()
	if runErr == nil {
		if err := p.emit(drainCtx, cl); err != nil {
			runErr = fmt.Errorf("emit on shutdown: %w", err)
		}
	}
	cl.AllowRebalance()
	if err := cl.LeaveGroupContext(drainCtx); err != nil {
		p.logger.Warn("leave consumer group failed", zap.String("group", p.cfg.Group), zap.Error(err))
	}
	closeWithin(drainCtx, cl)
	st := p.Stats()
	p.logger.Info("uc3 processor stopped",
		zap.Uint64("consumed", st.Consumed), zap.Uint64("emitted", st.Emitted),
		zap.Uint64("late", st.Late), zap.Uint64("invalid", st.Invalid), zap.Uint64("decode_errors", st.DecodeErrors))
	return runErr
}

// closeWithin closes the client but stops waiting when ctx ends: with an
// unreachable coordinator, leaving the group can block until its session
// times out. The close then finishes in the background.
func closeWithin(ctx context.Context, cl *kgo.Client) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl.Close()
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// loop polls and aggregates, and emits whenever EmitInterval has passed.
// drainCtx bounds emits, which may finish after ctx ends.
func (p *Processor) loop(ctx, drainCtx context.Context, cl *kgo.Client) error {
	nextEmit := time.Now().Add(p.cfg.EmitInterval)
	for {
		pollCtx, cancel := context.WithDeadline(ctx, nextEmit)
		fetches := cl.PollRecords(pollCtx, maxPollRecords)
		cancel()
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			p.logger.Warn("fetch failed", zap.String("topic", topic), zap.Int32("partition", partition), zap.Error(err))
		})
		if err := p.process(fetches); err != nil {
			cl.AllowRebalance()
			return err
		}

		var err error
		if now := time.Now(); !now.Before(nextEmit) {
			err = p.emit(drainCtx, cl)
			nextEmit = now.Add(p.cfg.EmitInterval)
		}
		cl.AllowRebalance()
		if err != nil {
			return err
		}
		if err := p.takeFatal(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// process decodes and aggregates one poll's records.
func (p *Processor) process(fetches kgo.Fetches) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		consumed, late, invalid, bad uint64
		engineErr                    error
	)
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 || engineErr != nil {
			return
		}
		e, err := p.engine(ftp.Partition)
		if err != nil {
			engineErr = err
			return
		}
		for _, r := range ftp.Records {
			rec, err := uc3.Decode(p.cfg.Format, r.Value)
			if err != nil {
				bad++
				p.lastDecodeErr = fmt.Errorf("partition %d offset %d: %w", r.Partition, r.Offset, err)
				continue
			}
			switch e.Add(rec) {
			case aggregate.Late:
				late++
			case aggregate.Invalid:
				invalid++
			}
		}
		consumed += uint64(len(ftp.Records))
	})
	p.recentDecodeErrors += int(bad)
	add(&p.consumed, p.metrics.consumed, consumed)
	add(&p.late, p.metrics.late, late)
	add(&p.invalid, p.metrics.invalid, invalid)
	add(&p.decodeErrors, p.metrics.decodeErrors, bad)
	return engineErr
}

func add(total *atomic.Uint64, c prometheus.Counter, n uint64) {
	if n > 0 {
		total.Add(n)
		c.Add(float64(n))
	}
}

// engine returns the partition's engine, creating it on first use.
func (p *Processor) engine(partition int32) (*aggregate.Engine, error) {
	if e := p.engines[partition]; e != nil {
		return e, nil
	}
	e, err := aggregate.New(p.aggCfg)
	if err != nil {
		return nil, fmt.Errorf("create aggregation for partition %d: %w", partition, err)
	}
	p.engines[partition] = e
	return e, nil
}

// emit produces every aggregate updated since the last emit, waits for the
// acknowledgements, and then commits the offsets of all processed records.
func (p *Processor) emit(ctx context.Context, cl *kgo.Client) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.outputErr != nil {
		return fmt.Errorf("not emitting after an earlier failure: %w", p.outputErr)
	}

	if p.recentDecodeErrors > 0 {
		p.logger.Warn("skipped undecodable records",
			zap.Int("count", p.recentDecodeErrors), zap.String("format", string(p.cfg.Format)), zap.Error(p.lastDecodeErr))
		p.recentDecodeErrors, p.lastDecodeErr = 0, nil
	}

	var (
		errMu    sync.Mutex
		firstErr error
		acked    atomic.Uint64
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			errMu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			errMu.Unlock()
			return
		}
		acked.Add(1)
	}
	produced := 0
	for _, e := range p.engines {
		p.updates = e.Drain(p.updates[:0])
		for _, u := range p.updates {
			// One allocation for key and value: the client owns the
			// record until its promise runs.
			id := u.Key.SensorID
			buf := make([]byte, 0, len(id)+maxStatsJSON+2*len(id))
			buf = append(buf, id...)
			buf = uc3.AppendStatisticsJSON(buf, uc3.HourOfDayStatistics{
				Identifier:         id,
				HourOfDay:          u.Key.HourOfDay,
				WindowStartMs:      u.Window.Start,
				WindowEndMs:        u.Window.End,
				Count:              u.Stats.Count,
				Mean:               u.Stats.Mean,
				PopulationVariance: u.Stats.PopulationVariance(),
				Min:                u.Stats.Min,
				Max:                u.Stats.Max,
			})
			cl.Produce(ctx, &kgo.Record{Topic: p.cfg.OutputTopic, Key: buf[:len(id):len(id)], Value: buf[len(id):]}, promise)
			produced++
		}
	}
	clear(p.updates) // release sensor id strings
	p.updates = p.updates[:0]
	if produced > 0 {
		err := cl.Flush(ctx)
		add(&p.emitted, p.metrics.emitted, acked.Load())
		errMu.Lock()
		if firstErr != nil {
			err = firstErr
		}
		errMu.Unlock()
		if err != nil {
			p.outputErr = fmt.Errorf("produce %d aggregates to %s: %w", produced, p.cfg.OutputTopic, err)
			return p.outputErr
		}
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		// Not fatal: the aggregates are out and the next commit covers
		// these offsets; at worst a restart re-reads some records.
		p.logger.Warn("commit offsets failed", zap.String("group", p.cfg.Group), zap.Error(err))
	}
	return nil
}

// onRevoked emits and commits before the partitions go, so that the next
// owner starts where this member's output ends, and then drops their state.
func (p *Processor) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DrainTimeout)
	defer cancel()
	if err := p.emit(ctx, cl); err != nil {
		p.setFatal(fmt.Errorf("emit before giving up partitions: %w", err))
	}
	p.drop(revoked[p.cfg.InputTopic], "partitions revoked")
}

// onLost drops the state of partitions another member may already own;
// emitting or committing for them could rewind that member's progress.
func (p *Processor) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.drop(lost[p.cfg.InputTopic], "partitions lost")
}

func (p *Processor) drop(partitions []int32, msg string) {
	if len(partitions) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range partitions {
		delete(p.engines, part)
	}
	p.logger.Info(msg, zap.String("topic", p.cfg.InputTopic), zap.Int32s("partitions", partitions))
}

func (p *Processor) setFatal(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fatal == nil {
		p.fatal = err
	}
}

func (p *Processor) takeFatal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fatal
}
