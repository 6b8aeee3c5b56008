package energy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// promAnswer is what the fake Prometheus answers a query with: series (an
// instant vector), a raw body, or — neither — a bad_data error.
type promAnswer struct {
	series []map[string]any
	raw    string
}

// promServer answers /api/v1/query as a Prometheus server's instant-query
// API does, with what results returns for the query (results may block
// until ctx, the request's, ends).
type promServer struct{ *httptest.Server }

func newPromServer(tb testing.TB, results func(ctx context.Context, query string) promAnswer) *promServer {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.URL.Path != "/api/v1/query" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		res := results(r.Context(), r.Form.Get("query"))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case res.raw != "":
			_, _ = w.Write([]byte(res.raw))
		case res.series == nil:
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": "bad_data", "error": "parse error"})
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": res.series}})
		}
	}))
	tb.Cleanup(srv.Close)
	return &promServer{srv}
}

func series(labels map[string]string, v float64) map[string]any {
	return map[string]any{"metric": labels, "value": []any{1740830400.0, fmt.Sprint(v)}}
}

// What the contract suite (source_contract_test.go) leaves to PromQLSource
// itself: workloads are identified by their labels, zones are named by
// their zone label and sorted, and a query Prometheus rejects and a missing
// node query are errors naming them.
func TestPromQLSource(t *testing.T) {
	w := newPromQLWorld(t).(*promqlWorld)
	src := w.newSource(t)
	ctx := context.Background()
	_, err := src.Read(ctx, t0)
	require.NoError(t, err)
	w.spend(t, 60)
	m, err := src.Read(ctx, t0.Add(time.Second))
	require.NoError(t, err)
	byKey := map[string]energy.WorkloadUse{}
	for _, wl := range m.Workloads {
		byKey[wl.Key] = wl
	}
	require.Equal(t, energy.WorkloadUse{Workload: energy.Workload{Key: promTargetPod.String(), PodUID: fixturePod, Pod: "sut-0", Namespace: "gf"},
		Value: 15}, byKey[promTargetPod.String()])
	require.Equal(t, []energy.ZoneEnergy{{Zone: "dram", DeltaJ: 12, PowerW: 12}, {Zone: "package", DeltaJ: 48, PowerW: 48}}, m.Zones)

	bad, err := energy.NewPromQLSource(energy.PromQLOptions{URL: w.srv.URL, NodeQuery: "rate(oops"})
	require.NoError(t, err)
	_, err = bad.Read(ctx, t0)
	requireErrorMentions(t, err, "promql source", "rate(oops", "parse error")

	_, err = energy.NewPromQLSource(energy.PromQLOptions{URL: w.srv.URL})
	require.ErrorContains(t, err, "node query required")
}
