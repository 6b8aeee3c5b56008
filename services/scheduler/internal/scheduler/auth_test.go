package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// The API's tests use it as a user does: with a token from the token
// store, sent by a client as a bearer token (apiClient adds the one
// minted for the server asked).

// tokens holds the token of each test API server, by host:port.
var tokens sync.Map

// apiClient sends the token minted for the server it asks.
var apiClient = &http.Client{Transport: bearer{}}

type bearer struct{}

func (bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if tok, ok := tokens.Load(r.URL.Host); ok && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mintToken creates a token of role in the token store on b.
func mintToken(t testing.TB, b *bus.Bus, name string, role auth.Role) string {
	t.Helper()
	st, err := auth.OpenStore(t.Context(), b, nil)
	require.NoError(t, err)
	plain, _, err := st.Create(t.Context(), name, role, 0)
	require.NoError(t, err)
	return plain
}

// serveWithToken serves h on a real HTTP server until the test ends;
// apiClient's requests to it carry token.
func serveWithToken(t testing.TB, h http.Handler, token string) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	tokens.Store(u.Host, token)
	t.Cleanup(func() { tokens.Delete(u.Host) })
	return srv.URL
}

// The real scheduler's API refuses what it should: no token, a role too
// low, a body that is not JSON or YAML, one too large, too many requests.
func TestHTTPAPIRefusals(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, func(c *scheduler.Config) { c.HTTP.RatePerSecond, c.HTTP.Burst = 0.001, 30 })
	mux := http.NewServeMux()
	h.sched.RegisterHTTP(mux)
	url := serveWithToken(t, mux, "")
	viewer := mintToken(t, h.bus, "viewer", auth.Viewer)
	operator := mintToken(t, h.bus, "operator", auth.Operator)
	spec := fmt.Sprintf(specTmpl, 1)

	post := func(path, token, ctype, body string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	code, hdr, body := post("/v1/experiments", "", "application/yaml", spec)
	require.Equal(t, http.StatusUnauthorized, code, body)
	require.Equal(t, `Bearer realm="greenflow"`, hdr.Get("WWW-Authenticate"))
	code, _, body = post("/v1/experiments", viewer, "application/yaml", spec)
	require.Equal(t, http.StatusForbidden, code, body)
	require.JSONEq(t, `{"error":"token viewer has role viewer; this needs operator"}`, body)
	code, _, body = post("/v1/experiments", operator, "text/plain", spec)
	require.Equal(t, http.StatusUnsupportedMediaType, code, body)
	code, _, body = post("/v1/experiments", operator, "application/yaml", strings.Repeat("#", int(auth.DefaultLimits().MaxBodyBytes)+1))
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)
	code, _, body = post("/v1/experiments/x/cancel", viewer, "", "")
	require.Equal(t, http.StatusForbidden, code, body, "a viewer cancels nothing")

	code, _, body = post("/v1/experiments", operator, "application/yaml", spec)
	require.Equal(t, http.StatusAccepted, code, body)
	var rep scheduler.SubmitReply
	require.NoError(t, json.Unmarshal([]byte(body), &rep))

	// The operator's budget (30, refilled one per 1000 s) runs out; the
	// viewer's is its own.
	var last int
	for range 30 {
		if last, _, _ = post("/v1/experiments/"+rep.ID+"/cancel", operator, "", ""); last == http.StatusTooManyRequests {
			break
		}
	}
	require.Equal(t, http.StatusTooManyRequests, last)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/v1/experiments", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+viewer)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// A token never reaches the logs, the events or the stored state: a real
// request flow (submit, status, list, cancel, refusals) with the
// scheduler's logs captured, then every message of every JetStream stream
// (events, commands, KV buckets — the token bucket holds hashes) and the
// experiment's ClickHouse record are scanned for the tokens' secrets.
func TestTokensNeverLeakIntoLogsOrEvents(t *testing.T) {
	t.Parallel()
	url := testenv.NATS(t)
	b := testenv.Bus(t, url, "scheduler")
	core, logs := observer.New(zap.DebugLevel)
	logger := zap.New(zapcore.NewTee(core, testenv.Logger(t).Core()))
	st := testenv.Store(t)
	s, err := scheduler.New(testConfig(nil), scheduler.Deps{Bus: b, Store: st, Logger: logger, Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	runScheduler(t, t.Context(), s)
	testenv.Eventually(t, 30*time.Second, "scheduler ready", func() bool { return s.Check() == nil })
	mux := http.NewServeMux()
	s.RegisterHTTP(mux)
	admin := mintToken(t, b, "admin", auth.Admin)
	api := serveWithToken(t, mux, admin)

	resp, err := apiClient.Post(api+"/v1/tokens", "application/json", strings.NewReader(`{"name":"ci","role":"operator"}`))
	require.NoError(t, err)
	var created auth.Created
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	call := func(method, path, token, ctype, body string) int {
		req, err := http.NewRequestWithContext(t.Context(), method, api+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusAccepted, call("POST", "/v1/experiments", created.Token, "application/yaml", fmt.Sprintf(specTmpl, 1)))
	var list []scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, api+"/v1/experiments", &list))
	require.Len(t, list, 1)
	require.Equal(t, http.StatusOK, call("GET", "/v1/experiments/"+list[0].ID, created.Token, "", ""))
	require.Equal(t, http.StatusAccepted, call("POST", "/v1/experiments/"+list[0].ID+"/cancel", created.Token, "", ""))
	require.Equal(t, http.StatusUnsupportedMediaType, call("POST", "/v1/experiments", created.Token, "text/plain", "x"))
	require.Equal(t, http.StatusOK, call("DELETE", "/v1/tokens/ci", admin, "", ""))
	require.Equal(t, http.StatusUnauthorized, call("GET", "/v1/experiments", created.Token, "", ""))
	require.NotZero(t, logs.Len())

	secrets := map[string]string{"admin": secretOf(admin), "ci": secretOf(created.Token)}
	for _, e := range logs.All() {
		components := 0
		for _, f := range e.Context {
			if f.Key == "component" {
				components++
			}
		}
		require.LessOrEqual(t, components, 1, "log entry %q names its component %d times", e.Message, components)
		line, err := json.Marshal(e.ContextMap())
		require.NoError(t, err)
		for name, sec := range secrets {
			require.NotContains(t, e.Message+string(line), sec, "log entry %q holds token %s", e.Message, name)
		}
	}
	js, err := jetstream.New(testenv.NATSConn(t, url))
	require.NoError(t, err)
	var scanned int
	for name := range js.StreamNames(t.Context()).Name() {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		info, err := st.Info(t.Context())
		require.NoError(t, err)
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				continue // deleted
			}
			scanned++
			for tok, sec := range secrets {
				require.NotContains(t, string(m.Data), sec, "stream %s message %d holds token %s", name, seq, tok)
				for k, v := range m.Header {
					require.NotContains(t, strings.Join(v, ","), sec, "stream %s message %d header %s holds token %s", name, seq, k, tok)
				}
			}
		}
	}
	require.Greater(t, scanned, 3, "the flow left messages to scan")
	// The stored experiment (its spec and record, which export and
	// report show) holds none either.
	var rec store.Experiment
	testenv.Eventually(t, 30*time.Second, "the experiment's record stored", func() bool {
		rec, err = st.GetExperiment(t.Context(), list[0].ID)
		return err == nil && rec.Spec != ""
	})
	for tok, sec := range secrets {
		require.NotContains(t, rec.Name+rec.Spec+rec.Labels+rec.Environment, sec, "the stored experiment holds token %s", tok)
	}
}

// secretOf is the random part of a token.
func secretOf(token string) string { return token[len(auth.Prefix)+13:] }

// TestAdminTokenFileIsAdoptedAtStart: a cluster's first admin token, drawn
// before the platform ran and given as --admin-token-file, works at the API
// once the scheduler has started — and once an admin revoked it, a restart
// with the same file does not bring it back.
func TestAdminTokenFileIsAdoptedAtStart(t *testing.T) {
	t.Parallel()
	plain, err := auth.Draw()
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "admin.token")
	require.NoError(t, os.WriteFile(file, []byte(plain+"\n"), 0o600))
	h, _ := newHarness(t, func(c *scheduler.Config) { c.AdminTokenFile = file })
	mux := http.NewServeMux()
	h.sched.RegisterHTTP(mux)
	url := serveWithToken(t, mux, plain)
	get := func() int {
		resp, err := apiClient.Get(url + "/v1/tokens")
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, get(), "the adopted token is an admin's")

	store, err := auth.OpenStore(t.Context(), h.bus, nil)
	require.NoError(t, err)
	_, err = store.Revoke(t.Context(), "cluster-admin")
	require.NoError(t, err)
	h.stopScheduler()
	h.stopScheduler = h.startScheduler(context.Background(), func(c *scheduler.Config) { c.AdminTokenFile = file })
	require.Equal(t, http.StatusUnauthorized, get(), "revoked stays revoked across a restart")
}
