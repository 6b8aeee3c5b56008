package energy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// fakePrometheus answers /api/v1/query with the series results() returns for
// the query, as a Prometheus server's instant-query API does.
func fakePrometheus(tb testing.TB, results func(query string) []map[string]any) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.URL.Path != "/api/v1/query" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		res := results(r.Form.Get("query"))
		if res == nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": "bad_data", "error": "parse error"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": res}})
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func series(labels map[string]string, v float64) map[string]any {
	return map[string]any{"metric": labels, "value": []any{1740830400.0, fmt.Sprint(v)}}
}

func TestPromQLSource(t *testing.T) {
	const nodeQ = `kepler_node_cpu_joules_total{node_name="worker-1",zone=~"package|dram"}`
	const podQ = `sum by (pod_id, pod_name, pod_namespace) (kepler_pod_cpu_joules_total{node_name="worker-1",zone=~"package|dram"})`
	// Per step: package, dram, pod counters. Step 3 resets the package
	// series (exporter restart): no trustworthy total, a baseline.
	steps := [][3]float64{{1000, 200, 100}, {1050, 210, 130}, {1100, 220, 150}, {20, 230, 160}, {70, 240, 170}}
	var step atomic.Int32
	srv := fakePrometheus(t, func(q string) []map[string]any {
		s := steps[step.Load()]
		switch q {
		case nodeQ:
			return []map[string]any{
				series(map[string]string{"__name__": "kepler_node_cpu_joules_total", "zone": "package"}, s[0]),
				series(map[string]string{"__name__": "kepler_node_cpu_joules_total", "zone": "dram"}, s[1]),
			}
		case podQ:
			return []map[string]any{series(map[string]string{"pod_id": fixturePod, "pod_name": "sut-0", "pod_namespace": "gf-r0000"}, s[2])}
		}
		return nil
	})
	src, err := energy.NewPromQLSource(energy.PromQLOptions{URL: srv.URL, NodeQuery: nodeQ, WorkloadQuery: podQ})
	require.NoError(t, err)

	want := []struct {
		baseline bool
		totalJ   float64
		podJ     float64
	}{{baseline: true}, {totalJ: 60, podJ: 30}, {totalJ: 60, podJ: 20}, {baseline: true}, {totalJ: 60, podJ: 10}}
	for i, w := range want {
		step.Store(int32(i))
		m, err := src.Read(context.Background(), t0.Add(time.Duration(i)*time.Second))
		require.NoError(t, err, "step %d", i)
		if w.baseline {
			require.Zero(t, m.Interval, "step %d", i)
			continue
		}
		require.InDelta(t, w.totalJ, m.TotalDeltaJ, 1e-9, "step %d", i)
		require.Len(t, m.Workloads, 1)
		require.Equal(t, "sut-0", m.Workloads[0].Pod)
		require.Equal(t, fixturePod, m.Workloads[0].PodUID)
		require.InDelta(t, w.podJ, m.Workloads[0].Value, 1e-9, "step %d", i)
		require.Len(t, m.Zones, 2)
		require.Equal(t, "dram", m.Zones[0].Zone)
	}

	bad, err := energy.NewPromQLSource(energy.PromQLOptions{URL: srv.URL, NodeQuery: "rate(oops"})
	require.NoError(t, err)
	_, err = bad.Read(context.Background(), t0)
	requireErrorMentions(t, err, "promql source", "rate(oops")

	_, err = energy.NewPromQLSource(energy.PromQLOptions{URL: srv.URL})
	require.ErrorContains(t, err, "node query required")
}
