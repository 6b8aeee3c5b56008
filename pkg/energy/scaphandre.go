package energy

import (
	"fmt"
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

func (s *ScaphandreSource) measure(fams map[string]*dto.MetricFamily, now time.Time, interval time.Duration) (Measurement, error) {
	energyUJ, hasEnergy := firstValue(fams, scaphHostEnergy)
	powerUW, hasPower := firstValue(fams, scaphHostPower)
	hasPower = hasPower && powerUW >= 0 && powerUW/1e6 <= s.maxPowerW
	if !hasEnergy && !hasPower {
		return Measurement{}, fmt.Errorf("scaphandre source %s: neither %s nor a valid %s in the exposition", s.url, scaphHostEnergy, scaphHostPower)
	}
	cs, start := s.begin(fams)
	started := s.started
	dt := interval.Seconds()

	meas := Measurement{NodeReading: NodeReading{Time: now, Interval: interval, Source: SourceScaphandre}, Basis: BasisJoules}
	complete := started
	counted := false
	if hasEnergy {
		d, st := meas.observe(cs, "host", "host", energyUJ/1e6, interval, s.maxPowerW)
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

	return s.finish(now, start, cs, meas, complete), nil
}
