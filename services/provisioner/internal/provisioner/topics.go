package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/events"
)

func topicManager(be Backend) (TopicManager, bool, error) {
	tm, ok := be.(TopicManager)
	if !ok {
		return nil, false, nil
	}
	managed, err := tm.ManagesTopics()
	return tm, managed, err
}

func (p *Provisioner) admin(brokers []string) (*kadm.Client, error) {
	key := strings.Join(brokers, ",")
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.admins[key]; ok {
		return a, nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.RequestTimeoutOverhead(5 * time.Second)}, p.kafka...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client for %s: %w", key, err)
	}
	a := kadm.NewClient(cl)
	p.admins[key] = a
	return a, nil
}

func (p *Provisioner) closeAdmins() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, a := range p.admins {
		a.Close()
		delete(p.admins, k)
	}
}

// kafkaError is a failure of the Kafka admin API; transient when the
// brokers could not be reached or answered with a retriable error.
type kafkaError struct {
	err       error
	transient bool
}

func (e kafkaError) Error() string   { return e.err.Error() }
func (e kafkaError) Unwrap() error   { return e.err }
func (e kafkaError) Transient() bool { return e.transient }

// kafkaTransient reports an admin request that failed because the brokers
// are down, unreachable or busy — not because of what was asked.
func kafkaTransient(err error) bool {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// franz-go reports some dial failures by message only.
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "unable to dial") || strings.Contains(s, "i/o timeout")
}

func (p *Provisioner) createTopics(ctx context.Context, m *events.RunProvision) error {
	if len(m.Kafka.Brokers) == 0 {
		return errors.New("no Kafka brokers given")
	}
	a, err := p.admin(m.Kafka.Brokers)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, p.cfg.TopicTimeout)
	defer cancel()
	topics := []string{m.Kafka.InputTopic, m.Kafka.OutputTopic}
	resp, err := a.CreateTopics(cctx, int32(m.Kafka.Partitions), 1, nil, topics...)
	if err != nil {
		return kafkaError{fmt.Errorf("create topics %v on %v: %w", topics, m.Kafka.Brokers, err), ctx.Err() == nil && kafkaTransient(err)}
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return kafkaError{fmt.Errorf("create topic %s on %v: %w", r.Topic, m.Kafka.Brokers, r.Err), kafkaTransient(r.Err)}
		}
	}
	return nil
}

// removeTopics deletes a run's topics the way they were created; a topic
// already gone counts as deleted.
func (p *Provisioner) removeTopics(ctx context.Context, be Backend, runID string, k *events.Kafka) error {
	tm, managed, err := topicManager(be)
	if err != nil {
		return err
	}
	if managed {
		return tm.DeleteTopics(ctx, runID)
	}
	if k == nil || len(k.Brokers) == 0 {
		return nil // no topics known: none were created by us
	}
	a, err := p.admin(k.Brokers)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.TopicTimeout)
	defer cancel()
	topics := []string{k.InputTopic, k.OutputTopic}
	resp, err := a.DeleteTopics(dctx, topics...)
	if err != nil {
		return kafkaError{fmt.Errorf("delete topics %v on %v: %w", topics, k.Brokers, err), kafkaTransient(err)}
	}
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic %s on %v: %w", r.Topic, k.Brokers, r.Err))
		}
	}
	return errors.Join(errs...)
}
