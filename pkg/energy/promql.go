package energy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// PromQLOptions configures a PromQLSource.
type PromQLOptions struct {
	URL    string       // Prometheus server, e.g. http://prometheus:9090
	Client *http.Client // nil: a client bounded only by Read's context
	// NodeQuery returns the node's cumulative energy in joules: one series,
	// or several that do not overlap (e.g. per RAPL package) and are summed.
	// A "zone" label names a series as a zone.
	// Example: kepler_node_cpu_joules_total{node_name="n1",zone=~"package|dram"}
	NodeQuery string
	// WorkloadQuery, optional, returns cumulative joules per workload,
	// identified by any of the labels pid, container_id, pod_id/pod_uid,
	// pod_name/pod/kubernetes_pod_name and
	// pod_namespace/namespace/kubernetes_pod_namespace.
	// Example: sum by (pod_id, pod_name, pod_namespace) (kepler_pod_cpu_joules_total{node_name="n1",zone=~"package|dram"})
	WorkloadQuery string
	MaxPowerW     float64 // plausibility bound of the node total; 0: DefaultMaxPowerW
	Estimated     bool    // mark readings estimated (the series come from a model)
}

// PromQLSource reads cumulative energy counters from a Prometheus server
// with instant queries evaluated at each reading's time.
//
// Every returned series is its own counter with CounterSet's policy, so one
// series resetting never produces a negative or spiking total; if any node
// series resets, that interval has no trustworthy total and is a baseline.
// The values change only as often as Prometheus scrapes the exporter: read
// no more often than that, or intervals alternate between nothing and
// several scrapes' worth.
type PromQLSource struct {
	opts PromQLOptions
	api  promv1.API
	counterState
}

// NewPromQLSource returns a source querying the server at opts.URL. It does
// no I/O.
func NewPromQLSource(opts PromQLOptions) (*PromQLSource, error) {
	if opts.NodeQuery == "" {
		return nil, errors.New("promql source: node query required")
	}
	if opts.MaxPowerW <= 0 {
		opts.MaxPowerW = DefaultMaxPowerW
	}
	c, err := api.NewClient(api.Config{Address: opts.URL, Client: httpClient(opts.Client)})
	if err != nil {
		return nil, fmt.Errorf("promql source %s: %w", opts.URL, err)
	}
	return &PromQLSource{opts: opts, api: promv1.NewAPI(c)}, nil
}

// Read implements Source.
func (p *PromQLSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	interval, err := p.counterState.interval(now)
	if err != nil {
		return Measurement{}, fmt.Errorf("promql source: %w", err)
	}
	nodes, err := p.query(ctx, p.opts.NodeQuery, now)
	if err != nil {
		return Measurement{}, err
	}
	if len(nodes) == 0 {
		return Measurement{}, fmt.Errorf("promql source %s: node query %q returned no series", p.opts.URL, p.opts.NodeQuery)
	}
	var works model.Vector
	if p.opts.WorkloadQuery != "" {
		if works, err = p.query(ctx, p.opts.WorkloadQuery, now); err != nil {
			return Measurement{}, err
		}
	}

	cs, start := p.begin(nil)
	started := p.started
	maxDelta := MaxPlausibleJ(p.opts.MaxPowerW, interval)
	meas := Measurement{NodeReading: NodeReading{Time: now, Interval: interval, Source: SourcePromQL, Estimated: p.opts.Estimated}, Basis: BasisJoules}
	complete := started
	for _, s := range nodes {
		d, st := meas.observe(cs, "node|"+s.Metric.String(), s.Metric.String(), float64(s.Value), interval, p.opts.MaxPowerW)
		if st != CounterOK {
			complete = false
		}
		meas.TotalDeltaJ += d
		if z := string(s.Metric["zone"]); z != "" {
			meas.Zones = append(meas.Zones, ZoneEnergy{Zone: z, DeltaJ: d, PowerW: power(d, interval)})
		}
	}
	slices.SortFunc(meas.Zones, func(a, b ZoneEnergy) int { return strings.Compare(a.Zone, b.Zone) })
	for _, s := range works {
		w := workloadOfLabels(s.Metric)
		d, st := cs.Observe("w|"+w.Key+"|", float64(s.Value), maxDelta)
		if st.IsReset() {
			meas.Resets++
		}
		meas.Workloads = append(meas.Workloads, WorkloadUse{Workload: w, Value: d})
	}
	return p.finish(now, start, cs, meas, complete), nil
}

func (p *PromQLSource) query(ctx context.Context, q string, at time.Time) (model.Vector, error) {
	v, _, _, err := p.api.Query(ctx, q, at)
	if err != nil {
		return nil, fmt.Errorf("promql source %s: query %q: %w", p.opts.URL, q, err)
	}
	switch v := v.(type) {
	case model.Vector:
		return v, nil
	case *model.Scalar:
		return model.Vector{{Metric: model.Metric{}, Value: v.Value, Timestamp: v.Timestamp}}, nil
	default:
		return nil, fmt.Errorf("promql source %s: query %q returned a %s, expected an instant vector", p.opts.URL, q, v.Type())
	}
}

// workloadOfLabels identifies a workload by the labels exporters use.
func workloadOfLabels(m model.Metric) Workload {
	first := func(names ...model.LabelName) string {
		for _, n := range names {
			if v := string(m[n]); v != "" {
				return v
			}
		}
		return ""
	}
	w := Workload{
		Key:         m.String(),
		ContainerID: normalizeContainerID(first("container_id")),
		PodUID:      first("pod_id", "pod_uid", "uid"),
		Pod:         first("pod_name", "pod", "kubernetes_pod_name"),
		Namespace:   first("pod_namespace", "namespace", "kubernetes_pod_namespace"),
	}
	if pid, err := strconv.Atoi(first("pid")); err == nil && pid > 0 {
		w.PID = pid
	}
	return w
}
