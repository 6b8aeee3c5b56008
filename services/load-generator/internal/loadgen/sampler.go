package loadgen

import (
	"context"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
)

// sampling is a running Kafka-signal sampler.
type sampling struct {
	cancel context.CancelFunc
	done   chan struct{}
	now    chan struct{} // sample at once
	atEnd  bool          // the load-end sample was asked for
}

// ensureSampler samples the run's Kafka signals from now until the load's
// records are all delivered (stopSampler), while this instance leads.
func (g *Generator) ensureSampler(ctx context.Context, p *plan) {
	if g.sink == nil || !g.cfg.RecordKafkaSignals {
		return
	}
	run := p.Cmd.RunID
	// Bounded even if no summary ever comes.
	deadline := p.end().Add(g.cfg.FlushTimeout + g.cfg.DeliveryTimeout)
	if !g.clock.Now().Before(deadline) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.samplers[run]; ok {
		return
	}
	sctx, cancel := context.WithDeadline(ctx, deadline)
	s := &sampling{cancel: cancel, done: make(chan struct{}), now: make(chan struct{}, 1)}
	g.samplers[run] = s
	go func() {
		defer func() {
			cancel()
			g.mu.Lock()
			if g.samplers[run] == s {
				delete(g.samplers, run)
			}
			g.mu.Unlock()
			close(s.done)
		}()
		cl, err := g.kafkaClient(p.Cmd.Kafka.Brokers)
		if err != nil {
			g.logger.Warn("kafka client for signals failed", zap.String("run_id", run), zap.Error(err))
			return
		}
		defer cl.Close()
		smp := kafkasignals.NewSampler(kadm.NewClient(cl), g.sink, g.base, g.clock.Now)
		smp.Run(sctx, kafkasignals.Target{ExperimentID: p.Cmd.ExperimentID, RunID: run, InputTopic: p.Cmd.Kafka.InputTopic,
			OutputTopic: p.Cmd.Kafka.OutputTopic, Group: "uc3-" + run}, g.cfg.SignalInterval, s.now)
	}()
}

// sampleLoadEnd asks a run's sampler, once, for a sample now: the load's
// records are all acknowledged, so it holds the topic's final count.
func (g *Generator) sampleLoadEnd(run string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.samplers[run]; ok && !s.atEnd {
		s.atEnd = true
		select {
		case s.now <- struct{}{}:
		default:
		}
	}
}

// stopSampler ends a run's sampler after one final sample; wait waits for
// that sample to be stored.
func (g *Generator) stopSampler(run string, wait bool) {
	g.mu.Lock()
	s, ok := g.samplers[run]
	g.mu.Unlock()
	if !ok {
		return
	}
	s.cancel()
	if wait {
		<-s.done
	}
}

// stopSamplers ends every sampler after its final sample and waits for
// those to be stored.
func (g *Generator) stopSamplers() {
	g.mu.Lock()
	runs := make([]string, 0, len(g.samplers))
	for run := range g.samplers {
		runs = append(runs, run)
	}
	g.mu.Unlock()
	for _, run := range runs {
		g.stopSampler(run, true)
	}
}
