package bus

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
)

// ConsumerSpec declares a durable consumer and its failure policy.
type ConsumerSpec struct {
	Durable string
	// Stream is the stream the consumer reads GreenFlow events from: the
	// lifecycle stream unless set (the collectors read StreamCollectors).
	Stream     string
	Types      []events.Type
	MaxDeliver int
	Backoff    []time.Duration // Nak delay per attempt; the last repeats
	AckWait    time.Duration
	// Workers > 1 handles messages of different runs concurrently; the
	// messages of one run (by Gf-Run-Id) stay on one worker, in order.
	Workers int
}

// DefaultMaxDeliver is how many deliveries a consumer whose spec sets no
// MaxDeliver gives a message before dead-lettering it.
const DefaultMaxDeliver = 5

var defaultBackoff = []time.Duration{200 * time.Millisecond, time.Second, 5 * time.Second}

// defaultAckWait is how long a message handed to a consumer that died
// stays with it before JetStream hands it to another (or to the consumer
// restarted). A handler that runs longer keeps its message: the bus extends
// the deadline every third of it while the handler runs (keeper).
const defaultAckWait = 15 * time.Second

// The durable consumers of every service, declared once. What each reads
// comes from the events registry: derived where a service has one consumer
// of a kind, and checked (CheckConsumers) where it splits them.
var (
	ConsumerScheduler = ConsumerSpec{Durable: "scheduler", Types: events.ConsumedBy(events.ServiceScheduler),
		AckWait: 10 * time.Second} // handlers are short; a crashed scheduler's messages come back soon
	// The provisioner waits for readiness (minutes on a cluster), so one
	// run's provision must not hold up another run's teardown.
	ConsumerProvisioner = ConsumerSpec{Durable: "provisioner", Types: events.ConsumedBy(events.ServiceProvisioner, events.Command), Workers: 8}
	// ConsumerProvisionerStates lets the provisioner learn which runs have
	// ended (run.state with a final state), so it can make sure nothing of
	// theirs is left behind even when their teardown command was lost.
	ConsumerProvisionerStates = ConsumerSpec{Durable: "provisioner-states", Types: events.ConsumedBy(events.ServiceProvisioner, events.Event), Workers: 4}
	ConsumerLoadGenerator     = ConsumerSpec{Durable: "load-generator", Types: events.ConsumedBy(events.ServiceLoadGenerator)}
	// The analyzer Naks a run.measured until the window's last samples are
	// stored (up to its samplesWait, 10 s by default, after the window
	// end): its redeliveries must outlast that wait and leave room for real
	// retries after it (33 s in all).
	ConsumerAnalyzer = ConsumerSpec{Durable: "analyzer", Types: []events.Type{events.TypeRunMeasured}, MaxDeliver: 10,
		Backoff: []time.Duration{250 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}}
	// ConsumerRecorder stores run time series (load progress) in ClickHouse.
	ConsumerRecorder = ConsumerSpec{Durable: "analyzer-recorder", Types: []events.Type{events.TypeLoadProgress}}
	// consumerCollector is every energy-collector instance's consumer, but
	// for the instance suffix of its name (ConsumerCollector).
	// It reads the collectors' own stream (StreamCollectors): the
	// collectors' permission to use any consumer name is on that stream
	// only.
	consumerCollector = ConsumerSpec{Durable: collectorPrefix + "*", Stream: StreamCollectors, Types: events.ConsumedBy(events.ServiceEnergyCollector)}
)

// consumers are the durable consumers each service runs; a trailing * in a
// name stands for an instance suffix.
var serviceConsumers = map[events.Service][]ConsumerSpec{
	events.ServiceScheduler:       {ConsumerScheduler},
	events.ServiceProvisioner:     {ConsumerProvisioner, ConsumerProvisionerStates},
	events.ServiceLoadGenerator:   {ConsumerLoadGenerator},
	events.ServiceEnergyCollector: {consumerCollector},
	events.ServiceAnalyzer:        {ConsumerAnalyzer, ConsumerRecorder},
}

// ExpectedConsumers names the durable consumers a service runs (a
// trailing * matches any instance suffix), so that its /healthz waits for
// them even when its component starts them late in Run: svcmain and the
// dev stack pass them to Bus.Expect.
func ExpectedConsumers(service string) []string {
	var out []string
	for _, c := range serviceConsumers[events.Service(service)] {
		out = append(out, c.Durable)
	}
	return out
}

// ConsumersOf are the durable consumers service runs (a trailing * in a
// name stands for an instance suffix).
func ConsumersOf(service events.Service) []ConsumerSpec {
	return slices.Clone(serviceConsumers[service])
}

// CheckConsumers checks the durable consumers declared here against a
// registry (events.Entries()): every message a service consumes is read by
// exactly one of its consumers, and no consumer reads a message the
// registry does not say its service consumes. A consumer named per
// instance (a trailing *) reads a stream no other service's consumer
// reads: its service's permission is any consumer name on that stream
// (access.go). It reports every problem.
func CheckConsumers(reg []events.Entry) error {
	var errs []error
	for s, cs := range serviceConsumers {
		for _, c := range cs {
			if !strings.HasSuffix(c.Durable, "*") {
				continue
			}
			for o, ocs := range serviceConsumers {
				for _, oc := range ocs {
					if o != s && oc.stream() == c.stream() {
						errs = append(errs, fmt.Errorf("%s: consumer %s is named per instance, so %s may use any consumer of stream %s, but %s's consumer %s reads it too (give %s a stream of its own)",
							s, c.Durable, s, c.stream(), o, oc.Durable, c.Durable))
					}
				}
			}
		}
	}
	want := map[events.Service]map[events.Type]bool{}
	for _, e := range reg {
		for _, s := range e.Consumers {
			if want[s] == nil {
				want[s] = map[events.Type]bool{}
			}
			want[s][e.Type] = true
		}
	}
	services := slices.Sorted(maps.Keys(want))
	for s := range serviceConsumers {
		if !slices.Contains(services, s) {
			services = append(services, s)
		}
	}
	for _, s := range services {
		read := map[events.Type]string{}
		for _, c := range serviceConsumers[s] {
			for _, t := range c.Types {
				switch {
				case read[t] != "":
					errs = append(errs, fmt.Errorf("%s: %s is read by both %s and %s", s, t, read[t], c.Durable))
				case !want[s][t]:
					errs = append(errs, fmt.Errorf("%s: consumer %s reads %s, which the events registry does not say %s consumes", s, c.Durable, t, s))
				}
				read[t] = c.Durable
			}
		}
		for _, t := range slices.Sorted(maps.Keys(want[s])) {
			if read[t] == "" {
				errs = append(errs, fmt.Errorf("%s: consumes %s (events registry), but none of its durable consumers reads it", s, t))
			}
		}
	}
	return errors.Join(errs...)
}

const collectorPrefix = "energy-collector-"

// ConsumerCollector is one energy-collector instance's consumer: every
// instance sees every assignment.
func ConsumerCollector(instance string) ConsumerSpec {
	c := consumerCollector
	c.Durable = collectorPrefix + SanitizeName(instance)
	return c
}

// SanitizeName maps a name (a host name, an instance's) to one that can
// name a durable consumer or a KV key token: every character other than
// letters, digits, '-' and '_' becomes '_'.
func SanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// stream is the stream consumer c reads GreenFlow events from.
func (c ConsumerSpec) stream() string {
	if c.Stream == "" {
		return StreamLifecycle
	}
	return c.Stream
}

func (c ConsumerSpec) withDefaults() ConsumerSpec {
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if len(c.Backoff) == 0 {
		c.Backoff = defaultBackoff
	}
	if c.AckWait == 0 {
		c.AckWait = defaultAckWait
	}
	return c
}
