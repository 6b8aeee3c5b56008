package devstack_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// healthz GETs the stack's /healthz.
func healthz(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url + "/healthz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The dev stack's /healthz is 503, naming each service, until every
// service has started and its consumers consume; then 200. And the message
// that used to crash-loop the whole stack — an experiment.submit whose
// sweep has a NaN step — is dead-lettered while the stack stays up and
// ready.
func TestDevStackReadinessAndAPoisonSubmit(t *testing.T) {
	ctx := context.Background()
	st := devstacktest.New(t, devstacktest.Options(t))
	srv := httptest.NewServer(st.Handler())
	defer srv.Close()

	code, body := healthz(t, srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	for _, svc := range []string{"scheduler", "provisioner", "load-generator", "energy-collector", "analyzer"} {
		require.Contains(t, body, "- "+svc+": starting", body)
	}

	ended := devstacktest.Run(t, st)
	testenv.Eventually(t, 60*time.Second, "the stack ready", func() bool {
		code, body = healthz(t, srv.URL)
		return code == http.StatusOK
	})

	b := devstacktest.AdminBus(t, st)
	poison := "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: poison}\nspec:\n  factors:\n" +
		"    - {name: workload.sensors, range: {from: 1, to: 10, step: .nan}}\n"
	require.NoError(t, b.Publish(ctx, events.ExperimentSubmit{ExperimentID: "poison-1", Spec: poison}, "submit:poison-1"))
	// Refused with the reason and listed as failed (GET on the API).
	testenv.Eventually(t, 30*time.Second, "the poison submit listed as failed", func() bool {
		resp, err := get(t, srv.URL+"/v1/experiments/poison-1", st.AdminToken())
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct{ State, Reason string }
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		return st.State == events.ExperimentStateFailed && strings.Contains(st.Reason, "range.step: got NaN")
	})
	code, body = healthz(t, srv.URL)
	require.Equal(t, http.StatusOK, code, "the stack is still up and ready: %s", body)
	stopped, err := ended()
	require.False(t, stopped, "the stack stopped: %v", err)
}

// get GETs url with a bearer token.
func get(t testing.TB, url, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	return http.DefaultClient.Do(req)
}

// status is the answer's status code to a GET of url with token.
func status(t testing.TB, url, token string) int {
	t.Helper()
	resp, err := get(t, url, token)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// The dev stack makes its admin token on its first start, in a file only
// its user can read, and reuses it on the next start (same state dir);
// a token revoked is refused at once by the scheduler's API and the
// analyzer's alike; /healthz and /metrics need none; a cross-origin
// preflight is granted nothing.
func TestDevStackAdminTokenAndRevocation(t *testing.T) {
	o := devstacktest.Options(t)
	o.HTTPAddr = "127.0.0.1:0"
	st := devstacktest.New(t, o)
	admin := st.AdminToken()
	require.True(t, strings.HasPrefix(admin, auth.Prefix), "an admin token: %q", admin)
	path := filepath.Join(o.StateDir, devstack.TokenFile)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "only the stack's user may read the token")
	got, err := devstack.ReadToken(o.StateDir)
	require.NoError(t, err)
	require.Equal(t, admin, got)

	devstacktest.Run(t, st)
	api, err := st.APIURL(t.Context())
	require.NoError(t, err)
	ep, err := devstack.ReadEndpoints(o.StateDir)
	require.NoError(t, err)
	require.Equal(t, api, "http://"+ep.HTTPAddr, "endpoints.json names the bound address")

	for _, open := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get(api + open)
		require.NoError(t, err)
		resp.Body.Close()
		require.NotEqual(t, http.StatusUnauthorized, resp.StatusCode, "%s needs no token", open)
	}
	// A viewer token, made through the admin API.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, api+"/v1/tokens", strings.NewReader(`{"name":"dash","role":"viewer"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var created auth.Created
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	viewer := created.Token

	scheduler, analyzer := api+"/v1/experiments", api+"/v1/experiments/none/results"
	// Waiting with the admin token keeps the viewer's rate budget whole.
	testenv.Eventually(t, 30*time.Second, "the scheduler ready", func() bool { return status(t, scheduler, admin) == http.StatusOK })
	require.Equal(t, http.StatusOK, status(t, scheduler, viewer))
	require.Equal(t, http.StatusNotFound, status(t, analyzer, viewer), "the analyzer lets the viewer in (no such experiment)")
	require.Equal(t, http.StatusUnauthorized, status(t, scheduler, ""))
	require.Equal(t, http.StatusUnauthorized, status(t, analyzer, ""))

	pre, err := http.NewRequestWithContext(t.Context(), http.MethodOptions, scheduler, nil)
	require.NoError(t, err)
	pre.Header.Set("Origin", "https://evil.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, err = http.DefaultClient.Do(pre)
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), "a preflight from another origin is granted nothing")

	revoked := time.Now()
	req, err = http.NewRequestWithContext(t.Context(), http.MethodDelete, api+"/v1/tokens/dash", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	testenv.Eventually(t, 5*time.Second, "the revoked token refused by both APIs", func() bool {
		return status(t, scheduler, viewer) == http.StatusUnauthorized && status(t, analyzer, viewer) == http.StatusUnauthorized
	})
	t.Logf("revoked token refused by both APIs %s after the revoke", time.Since(revoked).Round(time.Millisecond))
	require.Equal(t, http.StatusOK, status(t, scheduler, admin))
}

// A second start on the same state dir reuses the admin token; one whose
// token was revoked gets a new one.
func TestDevStackReusesItsAdminToken(t *testing.T) {
	o := devstacktest.Options(t)
	o.Skip = []string{"energy-collector"} // its spool stays locked by the stack that never ran
	first, err := devstack.Start(t.Context(), o)
	require.NoError(t, err)
	admin := first.AdminToken()
	first.Close()

	second, err := devstack.Start(t.Context(), o)
	require.NoError(t, err)
	require.Equal(t, admin, second.AdminToken(), "the same token on the next start")
	b := devstacktest.AdminBus(t, second)
	tokens, err := auth.OpenStore(t.Context(), b, nil)
	require.NoError(t, err)
	_, err = tokens.Revoke(t.Context(), "dev-admin")
	require.NoError(t, err)
	second.Close()

	third := devstacktest.New(t, o)
	require.NotEqual(t, admin, third.AdminToken(), "a revoked token is replaced")
	got, err := devstack.ReadToken(o.StateDir)
	require.NoError(t, err)
	require.Equal(t, third.AdminToken(), got)
}
