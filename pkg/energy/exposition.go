package energy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

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
