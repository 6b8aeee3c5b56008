package energy

import (
	"context"
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The sources reading an exporter's metrics page (Kepler, Scaphandre):
// what they share, and how each is configured. How each reads its
// exporter's metrics is in kepler.go and scaphandre.go.

// exporter is what the sources reading an exporter's metrics page share:
// where the page is, the plausibility bound of its counters, and the
// counter state between readings.
type exporter struct {
	kind      string // names the source in errors: "kepler", "scaphandre"
	url       string
	client    *http.Client
	maxPowerW float64
	counterState
}

// newExporter fills the defaults in: DefaultMaxPowerW, and a client
// without a timeout of its own (Read's context bounds every scrape).
func newExporter(kind, url string, client *http.Client, maxPowerW float64) exporter {
	if maxPowerW <= 0 {
		maxPowerW = DefaultMaxPowerW
	}
	return exporter{kind: kind, url: url, client: httpClient(client), maxPowerW: maxPowerW}
}

// read scrapes the page and hands it, with the interval since the previous
// reading, to measure.
func (e *exporter) read(ctx context.Context, now time.Time,
	measure func(fams map[string]*dto.MetricFamily, now time.Time, interval time.Duration) (Measurement, error)) (Measurement, error) {
	interval, err := e.interval(now)
	if err != nil {
		return Measurement{}, fmt.Errorf("%s source: %w", e.kind, err)
	}
	fams, err := scrape(ctx, e.client, e.url)
	if err != nil {
		return Measurement{}, fmt.Errorf("%s source: %w", e.kind, err)
	}
	return measure(fams, now, interval)
}

// httpClient returns c, or a client without a timeout of its own: callers
// bound every scrape with the context.
func httpClient(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{}
}

// KeplerOptions configures a KeplerSource.
type KeplerOptions struct {
	URL       string       // the exporter's metrics page, e.g. http://node:28282/metrics
	Client    *http.Client // nil: a client bounded only by Read's context
	NodeName  string       // when set, the exposition's node_name label must match
	MaxPowerW float64      // plausibility bound of the node total; 0: DefaultMaxPowerW
}

// KeplerSource reads a Kepler exporter: the node's RAPL zones from
// kepler_node_cpu_joules_total{zone,path} and what Kepler attributed to each
// workload from its process, container or pod joules counters.
//
// The node total follows RAPLMeter's rule on Kepler's zones: psys when
// reported, otherwise package plus dram (core and uncore are inside the
// package). Workload energy is summed over the same zones, from the finest
// level the exporter publishes (processes, else containers, else pods);
// containers and pods of processes are joined through the container and pod
// series' pod_id, pod_name and pod_namespace labels, so both process and pod
// targets can be matched. A counter that goes backwards, or jumps further
// than MaxPowerW over the interval could explain, is a reset: the zone falls
// back to its kepler_node_cpu_watts gauge for that interval, or, without
// one, the reading becomes a baseline. An exporter restart
// (process_start_time_seconds changes) re-baselines every counter likewise.
type KeplerSource struct {
	exporter
	nodeName string
}

// NewKeplerSource returns a source reading the exporter at opts.URL. It does
// no I/O.
func NewKeplerSource(opts KeplerOptions) *KeplerSource {
	return &KeplerSource{exporter: newExporter(SourceKepler, opts.URL, opts.Client, opts.MaxPowerW), nodeName: opts.NodeName}
}

// Read implements Source.
func (k *KeplerSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	return k.read(ctx, now, k.measure)
}

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
type ScaphandreSource struct{ exporter }

// NewScaphandreSource returns a source reading the exporter at opts.URL. It
// does no I/O.
func NewScaphandreSource(opts ScaphandreOptions) *ScaphandreSource {
	return &ScaphandreSource{newExporter(SourceScaphandre, opts.URL, opts.Client, opts.MaxPowerW)}
}

// Read implements Source. (Its checkpoint holds only the host counter:
// Scaphandre's workloads are gauges.)
func (s *ScaphandreSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	return s.read(ctx, now, s.measure)
}
