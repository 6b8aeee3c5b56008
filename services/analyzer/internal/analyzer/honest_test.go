package analyzer_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// TestResultsAPIMarksIntervalsCrossingZero: two repetitions whose nodes
// drew 12 W and 30 W against a 10 W baseline have dynamic node energies of
// 40 J and 400 J; the 95 % interval of their mean (t = 12.7 with one degree
// of freedom) reaches far below zero. The API marks it, and says why, rather
// than serving a negative lower bound of an energy as a plain number.
func TestResultsAPIMarksIntervalsCrossingZero(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	for i, w := range []float64{12, 30} {
		m := runFixture(t, st, "e1-r000"+string(rune('0'+i)), "cz", int64(i)*100_000, w, 0)
		_, err := a.AnalyzeAndStore(ctx, m)
		require.NoError(t, err)
	}
	srv := resultsServer(t, st)
	resp, err := srv.get(t, srv.URL+"/v1/experiments/e1/results")
	require.NoError(t, err)
	defer resp.Body.Close()
	var doc struct {
		Configs []struct {
			Metrics map[string]struct {
				Mean          float64 `json:"mean"`
				CILow         float64 `json:"ci_low"`
				CICrossesZero bool    `json:"ci_crosses_zero"`
			} `json:"metrics"`
		} `json:"configs"`
		Notes map[string]string `json:"notes"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	require.Len(t, doc.Configs, 1)
	dyn := doc.Configs[0].Metrics[results.DynamicNodeEnergyJ]
	require.InDelta(t, 220.0, dyn.Mean, 1e-9)
	require.Less(t, dyn.CILow, 0.0)
	require.True(t, dyn.CICrossesZero)
	require.False(t, doc.Configs[0].Metrics[results.LagTrendSlope].CICrossesZero, "a slope may be negative")
	require.Equal(t, results.CICrossesZeroNote, doc.Notes["ci_crosses_zero"])
}

// resultsServer serves the results API of an analyzer on st (and on an
// embedded JetStream holding its tokens) until the test ends; its get
// asks with a viewer token, as a user does.
func resultsServer(t *testing.T, st *store.Store) *apiServer {
	b := testenv.Bus(t, testenv.NATS(t), "analyzer")
	a, err := analyzer.New(analyzer.Default(), analyzer.Deps{Bus: b, Store: st, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	mux := http.NewServeMux()
	a.RegisterHTTP(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tokens, err := auth.OpenStore(t.Context(), b, nil)
	require.NoError(t, err)
	viewer, _, err := tokens.Create(t.Context(), "viewer", auth.Viewer, 0)
	require.NoError(t, err)
	return &apiServer{Server: srv, token: viewer}
}

type apiServer struct {
	*httptest.Server
	token string
}

// get asks with the server's viewer token.
func (s *apiServer) get(t *testing.T, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	return http.DefaultClient.Do(req)
}

// The results API needs a viewer token; an analyzer built without a bus
// (no token store) refuses every request (503: it cannot check tokens)
// rather than serve them open.
func TestResultsAPINeedsAToken(t *testing.T) {
	st, _ := testenv.ParallelStore(t)
	srv := resultsServer(t, st)
	resp, err := http.Get(srv.URL + "/v1/experiments/e1/results")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, `Bearer realm="greenflow"`, resp.Header.Get("WWW-Authenticate"))
	resp, err = srv.get(t, srv.URL+"/v1/experiments/e1/results")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "a viewer gets through (no such experiment here)")

	mux := http.NewServeMux()
	newAnalyzer(t, st).RegisterHTTP(mux)
	open := httptest.NewServer(mux)
	t.Cleanup(open.Close)
	resp, err = srv.get(t, open.URL+"/v1/experiments/e1/results")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "no token store: refused (the API's fault, not the token's), never open")
}
