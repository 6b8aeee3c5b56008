package energy

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Kepler (0.10+) metric names.
const (
	keplerNodeJoules      = "kepler_node_cpu_joules_total"
	keplerNodeWatts       = "kepler_node_cpu_watts"
	keplerProcessJoules   = "kepler_process_cpu_joules_total"
	keplerContainerJoules = "kepler_container_cpu_joules_total"
	keplerPodJoules       = "kepler_pod_cpu_joules_total"
)

type keplerZone struct {
	key, name, path, label string
	value                  float64
}

func (k *KeplerSource) measure(fams map[string]*dto.MetricFamily, now time.Time, interval time.Duration) (Measurement, error) {
	node := metrics(fams, keplerNodeJoules)
	if len(node) == 0 {
		return Measurement{}, fmt.Errorf("kepler source %s: no %s in the exposition (is it a Kepler 0.10+ exporter with node metrics?)", k.url, keplerNodeJoules)
	}
	if want, got := k.nodeName, label(node[0], "node_name"); want != "" && got != want {
		return Measurement{}, fmt.Errorf("kepler source %s: exporter reports node_name %q, expected %q", k.url, got, want)
	}

	cs, start := k.begin(fams)
	started := k.started
	dt := interval.Seconds()
	maxDelta := MaxPlausibleJ(k.maxPowerW, interval)

	// Zones, labelled by name, or name@path where one name has several.
	var zones []keplerZone
	perName := map[string]int{}
	for _, m := range node {
		v, ok := metricValue(m)
		if !ok {
			continue
		}
		name := strings.ToLower(label(m, "zone"))
		p := label(m, "path")
		zones = append(zones, keplerZone{key: "node|" + name + "|" + p, name: name, path: p, label: name, value: v})
		perName[name]++
	}
	for i := range zones {
		if perName[zones[i].name] > 1 {
			zones[i].label = zones[i].name + "@" + path.Base(zones[i].path)
		}
	}
	slices.SortFunc(zones, func(a, b keplerZone) int { return strings.Compare(a.label, b.label) })
	inTotal := totalZoneSet(perName)
	watts := map[string]float64{}
	for _, m := range metrics(fams, keplerNodeWatts) {
		if v, ok := metricValue(m); ok {
			watts["node|"+strings.ToLower(label(m, "zone"))+"|"+label(m, "path")] = v
		}
	}

	meas := Measurement{NodeReading: NodeReading{Time: now, Interval: interval, Source: SourceKepler}, Basis: BasisJoules}
	complete := started
	for _, z := range zones {
		d, st := meas.observe(cs, z.key, z.label, z.value, interval, k.maxPowerW)
		switch st {
		case CounterOK:
		case CounterReset, CounterImplausible, CounterInvalid, CounterBaseline:
			if w, ok := watts[z.key]; ok && started && w >= 0 && w <= k.maxPowerW {
				d = w * dt // the gauge covers the interval the counter cannot
			} else if inTotal[z.name] {
				complete = false
			}
		}
		meas.Zones = append(meas.Zones, ZoneEnergy{Zone: z.label, DeltaJ: d, PowerW: power(d, interval)})
		if inTotal[z.name] {
			meas.TotalDeltaJ += d
		}
	}
	meas.Workloads = k.workloads(fams, cs, inTotal, maxDelta, &meas.Resets)

	return k.finish(now, start, cs, meas, complete), nil
}

// totalZoneSet is RAPL's rule on zone names: psys alone when present,
// otherwise package and dram.
func totalZoneSet(names map[string]int) map[string]bool {
	if names["psys"] > 0 {
		return map[string]bool{"psys": true}
	}
	return map[string]bool{"package": true, "dram": true}
}

// keplerPods is what a Kepler exposition says of pods: their names by pod
// id, and the pod of each container id.
type keplerPods struct {
	byID         map[string]keplerPod
	containerPod map[string]string
}

type keplerPod struct{ name, ns string }

func readKeplerPods(fams map[string]*dto.MetricFamily) keplerPods {
	p := keplerPods{byID: map[string]keplerPod{}, containerPod: map[string]string{}}
	for _, m := range metrics(fams, keplerPodJoules) {
		if id := label(m, "pod_id"); id != "" {
			p.byID[id] = keplerPod{label(m, "pod_name"), label(m, "pod_namespace")}
		}
	}
	for _, m := range metrics(fams, keplerContainerJoules) {
		if id, pod := label(m, "container_id"), label(m, "pod_id"); id != "" && pod != "" {
			p.containerPod[id] = pod
		}
	}
	return p
}

// keplerLevel is the finest workload level the exposition has: processes,
// containers or pods.
func keplerLevel(fams map[string]*dto.MetricFamily) string {
	switch {
	case len(metrics(fams, keplerProcessJoules)) > 0:
		return keplerProcessJoules
	case len(metrics(fams, keplerContainerJoules)) > 0:
		return keplerContainerJoules
	}
	return keplerPodJoules
}

// workload is the workload series m of level names, with its pod's name
// when known; false when m names none.
func (p keplerPods) workload(m *dto.Metric, level string) (Workload, bool) {
	var w Workload
	switch level {
	case keplerProcessJoules:
		pid, err := strconv.Atoi(label(m, "pid"))
		if err != nil || pid <= 0 {
			return Workload{}, false
		}
		w = Workload{Key: "pid/" + strconv.Itoa(pid), PID: pid, ContainerID: normalizeContainerID(label(m, "container_id"))}
		w.PodUID = p.containerPod[label(m, "container_id")]
	case keplerContainerJoules:
		id := label(m, "container_id")
		if id == "" {
			return Workload{}, false
		}
		w = Workload{Key: "container/" + id, ContainerID: normalizeContainerID(id), PodUID: label(m, "pod_id")}
	default:
		id := label(m, "pod_id")
		if id == "" {
			return Workload{}, false
		}
		w = Workload{Key: "pod/" + id, PodUID: id}
	}
	if pod, ok := p.byID[w.PodUID]; ok {
		w.Pod, w.Namespace = pod.name, pod.ns
	} else if level == keplerPodJoules {
		w.Pod, w.Namespace = label(m, "pod_name"), label(m, "pod_namespace")
	}
	return w, true
}

// workloads reads the finest workload level the exposition has.
func (k *KeplerSource) workloads(fams map[string]*dto.MetricFamily, cs *CounterSet, inTotal map[string]bool, maxDelta float64, resets *int) []WorkloadUse {
	pods := readKeplerPods(fams)
	level := keplerLevel(fams)
	// The same workload can appear as running and terminated; the larger
	// counter is the later one.
	type series struct {
		w     Workload
		zone  string
		value float64
	}
	byKey := map[string]*series{}
	var order []string
	for _, m := range metrics(fams, level) {
		zone := strings.ToLower(label(m, "zone"))
		if !inTotal[zone] {
			continue
		}
		v, ok := metricValue(m)
		if !ok {
			continue
		}
		w, ok := pods.workload(m, level)
		if !ok {
			continue
		}
		ck := "w|" + w.Key + "|" + zone
		if s, ok := byKey[ck]; ok {
			s.value = max(s.value, v)
			continue
		}
		byKey[ck] = &series{w: w, zone: zone, value: v}
		order = append(order, ck)
	}

	idx := map[string]int{}
	var out []WorkloadUse
	for _, ck := range order {
		s := byKey[ck]
		d, st := cs.Observe(ck, s.value, maxDelta)
		if st.IsReset() {
			*resets++
		}
		i, ok := idx[s.w.Key]
		if !ok {
			i = len(out)
			idx[s.w.Key] = i
			out = append(out, WorkloadUse{Workload: s.w})
		}
		out[i].Value += d
	}
	return out
}
