package energy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// DefaultMaxPowerW bounds the power a node's counter delta may imply before
// it is taken for a counter reset rather than energy: far above any server's
// CPU and DRAM draw, far below the spike a wrapped or re-based raw counter
// produces (a RAPL package counter spans about 262 kJ).
const DefaultMaxPowerW = 10_000

// maxExpositionBytes bounds one scrape; a Kepler exposition with process
// metrics on a busy node is a few MB.
const maxExpositionBytes = 64 << 20

// ParseExposition parses the Prometheus text exposition format (version
// 0.0.4) with prometheus/common's parser, UTF-8 names allowed.
func ParseExposition(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	return fams, nil
}

// scrape fetches an exporter's metrics page and parses it.
func scrape(ctx context.Context, client *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scrape %s: http status %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxExpositionBytes+1))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: read body: %w", url, err)
	}
	if len(body) > maxExpositionBytes {
		return nil, fmt.Errorf("scrape %s: exposition larger than %d bytes", url, maxExpositionBytes)
	}
	fams, err := ParseExposition(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return fams, nil
}

// metricValue is the sample value of a counter, gauge or untyped metric.
// Exporters do not always declare the type they document, so all three are
// read alike.
func metricValue(m *dto.Metric) (float64, bool) {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), true
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

// label returns the value of the label called name, or "".
func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// metrics returns the metrics of family name, or nil.
func metrics(fams map[string]*dto.MetricFamily, name string) []*dto.Metric {
	if f := fams[name]; f != nil {
		return f.GetMetric()
	}
	return nil
}

// firstValue returns the value of the first metric of family name.
func firstValue(fams map[string]*dto.MetricFamily, name string) (float64, bool) {
	for _, m := range metrics(fams, name) {
		if v, ok := metricValue(m); ok {
			return v, true
		}
	}
	return 0, false
}

// counterState is what every counter-reading source keeps between readings:
// the time of the previous reading, the exporter's start time (to notice a
// restart) and its counters. It is the unit of a checkpoint.
type counterState struct {
	started  bool
	last     time.Time
	start    float64 // the exporter's process_start_time_seconds, 0 if unknown
	counters CounterSet
}

// interval checks now against the previous reading.
func (s *counterState) interval(now time.Time) (time.Duration, error) {
	if !s.started {
		return 0, nil
	}
	if now.Before(s.last) {
		return 0, fmt.Errorf("reading at %s is before the previous one at %s", now.Format(time.RFC3339Nano), s.last.Format(time.RFC3339Nano))
	}
	return now.Sub(s.last), nil
}

// restarted reports whether the exporter's start time changed since the
// previous reading; then none of its counters continue the old ones.
func (s *counterState) restarted(fams map[string]*dto.MetricFamily) (float64, bool) {
	start, ok := firstValue(fams, "process_start_time_seconds")
	if !ok {
		return 0, false
	}
	return start, s.started && s.start != 0 && start != s.start
}

type checkpointData struct {
	Version  int                `json:"v"`
	TimeNs   int64              `json:"time_ns"`
	Start    float64            `json:"start,omitempty"`
	Counters map[string]float64 `json:"counters"`
}

const checkpointVersion = 1

// Checkpoint implements Checkpointer for the sources embedding the state:
// it encodes the state, keeping the counters of the workloads that pass
// keep (nil keeps all) and every node counter.
func (s *counterState) Checkpoint(keep func(string) bool) ([]byte, error) {
	if !s.started {
		return nil, errors.New("checkpoint: no reading yet")
	}
	return json.Marshal(checkpointData{Version: checkpointVersion, TimeNs: s.last.UnixNano(), Start: s.start,
		Counters: s.counters.snapshot(workloadKeep(keep))})
}

// scrape reads an exporter's metrics page and the interval since the
// previous reading; source names the source in errors.
func (s *counterState) scrape(ctx context.Context, now time.Time, source string, client *http.Client, url string) (map[string]*dto.MetricFamily, time.Duration, error) {
	interval, err := s.interval(now)
	if err != nil {
		return nil, 0, fmt.Errorf("%s source: %w", source, err)
	}
	fams, err := scrape(ctx, client, url)
	if err != nil {
		return nil, 0, fmt.Errorf("%s source: %w", source, err)
	}
	return fams, interval, nil
}

// Restore implements Checkpointer: it decodes a checkpoint; the state is
// unchanged on error.
func (s *counterState) Restore(data []byte) error {
	var c checkpointData
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("restore checkpoint: %w", err)
	}
	if c.Version != checkpointVersion {
		return fmt.Errorf("restore checkpoint: version %d, expected %d", c.Version, checkpointVersion)
	}
	if c.TimeNs <= 0 {
		return errors.New("restore checkpoint: no reading time")
	}
	s.started, s.last, s.start = true, time.Unix(0, c.TimeNs), c.Start
	s.counters.restore(c.Counters)
	return nil
}

// workloadKeep adapts a keep function on workload keys to counter keys of
// the form "w|<workload key>|…"; every other counter is kept.
func workloadKeep(keep func(string) bool) func(string) bool {
	if keep == nil {
		return nil
	}
	return func(k string) bool {
		rest, ok := strings.CutPrefix(k, "w|")
		if !ok {
			return true
		}
		if i := strings.LastIndexByte(rest, '|'); i >= 0 {
			rest = rest[:i]
		}
		return keep(rest)
	}
}

// httpClient returns c, or a client without a timeout of its own: callers
// bound every scrape with the context.
func httpClient(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{}
}
