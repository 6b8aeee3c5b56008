package energy

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Scaphandre metric names (µW and µJ).
const (
	scaphHostEnergy   = "scaph_host_energy_microjoules"
	scaphHostPower    = "scaph_host_power_microwatts"
	scaphSocketPower  = "scaph_socket_power_microwatts"
	scaphDomainPower  = "scaph_domain_power_microwatts"
	scaphProcessPower = "scaph_process_power_consumption_microwatts"
)

// ScaphandreOptions configures a ScaphandreSource.
type ScaphandreOptions struct {
	URL       string       // the exporter's metrics page, e.g. http://node:8080/metrics
	Client    *http.Client // nil: a client bounded only by Read's context
	MaxPowerW float64      // plausibility bound of the host total; 0: DefaultMaxPowerW
}

// ScaphandreSource reads a Scaphandre Prometheus exporter.
//
// The node total comes from the scaph_host_energy_microjoules counter when
// the exporter has it. That counter is the sensor's raw value, so it wraps
// with RAPL at a range the exposition does not give: a decrease, or a jump
// beyond MaxPowerW, is a reset, and that interval — like every interval of
// an exporter without the counter — integrates the scaph_host_power_microwatts
// gauge instead (Scaphandre's power is the average since its previous
// measurement, so P × interval is the interval's energy). Sockets and RAPL
// domains are reported as zones from their power gauges, never added to the
// total. Workloads are processes (scaph_process_power_consumption_microwatts,
// with container and pod labels when Scaphandre runs with --containers), at
// their power × interval.
type ScaphandreSource struct {
	opts ScaphandreOptions
	counterState
}

var (
	_ Source       = (*ScaphandreSource)(nil)
	_ Checkpointer = (*ScaphandreSource)(nil)
)

// NewScaphandreSource returns a source reading the exporter at opts.URL. It
// does no I/O.
func NewScaphandreSource(opts ScaphandreOptions) *ScaphandreSource {
	if opts.MaxPowerW <= 0 {
		opts.MaxPowerW = DefaultMaxPowerW
	}
	opts.Client = httpClient(opts.Client)
	return &ScaphandreSource{opts: opts}
}

// Read implements Source. (Its checkpoint holds only the host counter:
// Scaphandre's workloads are gauges.)
func (s *ScaphandreSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	fams, interval, err := s.scrape(ctx, now, "scaphandre", s.opts.Client, s.opts.URL)
	if err != nil {
		return Measurement{}, err
	}
	return s.measure(fams, now, interval)
}

func (s *ScaphandreSource) measure(fams map[string]*dto.MetricFamily, now time.Time, interval time.Duration) (Measurement, error) {
	energyUJ, hasEnergy := firstValue(fams, scaphHostEnergy)
	powerUW, hasPower := firstValue(fams, scaphHostPower)
	hasPower = hasPower && powerUW >= 0 && powerUW/1e6 <= s.opts.MaxPowerW
	if !hasEnergy && !hasPower {
		return Measurement{}, fmt.Errorf("scaphandre source %s: neither %s nor a valid %s in the exposition", s.opts.URL, scaphHostEnergy, scaphHostPower)
	}
	cs := &s.counterState.counters
	start, restarted := s.counterState.restarted(fams)
	if restarted {
		cs = &CounterSet{}
	}
	started := s.counterState.started
	dt := interval.Seconds()

	meas := Measurement{NodeReading: NodeReading{Time: now, Interval: interval, Source: SourceScaphandre}, Basis: BasisJoules}
	complete := started
	counted := false
	if hasEnergy {
		d, st := cs.Observe("host", energyUJ/1e6, s.opts.MaxPowerW*dt)
		if st == CounterReset {
			meas.Resets++
		}
		if st == CounterOK {
			meas.TotalDeltaJ, counted = d, true
		}
	}
	if !counted {
		if hasPower && started {
			meas.TotalDeltaJ = powerUW / 1e6 * dt
		} else {
			complete = false
		}
	}

	for _, m := range metrics(fams, scaphSocketPower) {
		if v, ok := metricValue(m); ok && v >= 0 {
			meas.Zones = append(meas.Zones, ZoneEnergy{Zone: "socket-" + label(m, "socket_id"), DeltaJ: v / 1e6 * dt, PowerW: v / 1e6})
		}
	}
	for _, m := range metrics(fams, scaphDomainPower) {
		if v, ok := metricValue(m); ok && v >= 0 {
			meas.Zones = append(meas.Zones, ZoneEnergy{
				Zone:   "socket-" + label(m, "socket_id") + "/" + strings.ToLower(label(m, "domain_name")),
				DeltaJ: v / 1e6 * dt, PowerW: v / 1e6,
			})
		}
	}
	slices.SortFunc(meas.Zones, func(a, b ZoneEnergy) int { return strings.Compare(a.Zone, b.Zone) })
	if !started {
		for i := range meas.Zones {
			meas.Zones[i].DeltaJ, meas.Zones[i].PowerW = 0, 0
		}
	}

	idx := map[int]int{}
	for _, m := range metrics(fams, scaphProcessPower) {
		v, ok := metricValue(m)
		pid, err := strconv.Atoi(label(m, "pid"))
		if !ok || err != nil || pid <= 0 || nonNegative(v) != v {
			continue
		}
		i, seen := idx[pid]
		if !seen {
			i = len(meas.Workloads)
			idx[pid] = i
			meas.Workloads = append(meas.Workloads, WorkloadUse{Workload: Workload{
				Key: "pid/" + strconv.Itoa(pid), PID: pid,
				ContainerID: normalizeContainerID(label(m, "container_id")),
				Pod:         label(m, "kubernetes_pod_name"),
				Namespace:   label(m, "kubernetes_pod_namespace"),
			}})
		}
		meas.Workloads[i].Value += v / 1e6 * dt
	}

	s.counterState.started, s.counterState.last, s.counterState.start = true, now, start
	if cs != &s.counterState.counters {
		s.counterState.counters = *cs
	}
	s.counterState.counters.Commit()
	if !complete {
		return baseline(meas), nil
	}
	meas.TotalPowerW = power(meas.TotalDeltaJ, interval)
	return meas, nil
}
