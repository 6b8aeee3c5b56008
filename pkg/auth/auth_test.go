package auth_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestRoleAllows(t *testing.T) {
	for _, tc := range []struct {
		have, need auth.Role
		want       bool
	}{
		{auth.Viewer, auth.Viewer, true},
		{auth.Viewer, auth.Operator, false},
		{auth.Viewer, auth.Admin, false},
		{auth.Operator, auth.Viewer, true},
		{auth.Operator, auth.Operator, true},
		{auth.Operator, auth.Admin, false},
		{auth.Admin, auth.Operator, true},
		{auth.Admin, auth.Admin, true},
		{auth.Role("root"), auth.Viewer, false},
		{auth.Role(""), auth.Viewer, false},
	} {
		require.Equal(t, tc.want, tc.have.Allows(tc.need), "%s may do what needs %s", tc.have, tc.need)
	}
}

func TestParseRole(t *testing.T) {
	for in, want := range map[string]auth.Role{"viewer": auth.Viewer, " Operator": auth.Operator, "ADMIN": auth.Admin} {
		got, err := auth.ParseRole(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := auth.ParseRole("owner")
	require.EqualError(t, err, `role "owner": expected viewer, operator or admin`)
}

func TestLimitsValidateNamesEveryProblem(t *testing.T) {
	require.NoError(t, auth.DefaultLimits().Validate("x.http"))
	err := auth.Limits{MaxBodyBytes: 0, RatePerSecond: -1, Burst: 0}.Validate("x.http")
	require.ErrorContains(t, err, "x.http.maxBodyBytes: got 0")
	require.ErrorContains(t, err, "x.http.ratePerSecond: got -1")
	require.ErrorContains(t, err, "x.http.burst: got 0")
}

// env is a guarded API on a real HTTP server with the token store on an
// embedded JetStream.
type env struct {
	url   string
	store *auth.Store
	clock *clocktesting.FakeClock
	logs  *observer.ObservedLogs
}

// openStore is a token store on its own embedded JetStream, and its bus
// (closing it cuts the store off).
func openStore(tb testing.TB, clk clock.PassiveClock) (*bus.Bus, *auth.Store) {
	tb.Helper()
	b := testenv.Bus(tb, testenv.NATS(tb), "auth-test")
	st, err := auth.OpenStore(tb.Context(), b, clk)
	require.NoError(tb, err)
	return b, st
}

func newEnv(t *testing.T, limits auth.Limits) *env {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	_, st := openStore(t, clk)
	core, logs := observer.New(zap.DebugLevel)
	g := auth.NewGuard(st, limits, clk, zap.New(core))
	mux := http.NewServeMux()
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			auth.WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		tok, _ := auth.FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]any{"by": tok.Name, "bytes": len(body)})
	})
	mux.Handle("GET /v1/things", g.Require(auth.Viewer, echo))
	mux.Handle("POST /v1/things", g.Require(auth.Operator, echo))
	auth.RegisterHTTP(mux, g, st)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{url: srv.URL, store: st, clock: clk, logs: logs}
}

func (e *env) token(t *testing.T, name string, role auth.Role) string {
	t.Helper()
	plain, _, err := e.store.Create(t.Context(), name, role, 0)
	require.NoError(t, err)
	return plain
}

type answer struct {
	code int
	h    http.Header
	body map[string]any
	raw  string
}

func do(t *testing.T, method, url, token, ctype, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	require.NoError(t, err)
	if body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	a := answer{code: res.StatusCode, h: res.Header, raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}

func TestGuardRefusesWhatItShould(t *testing.T) {
	e := newEnv(t, auth.DefaultLimits())
	viewer, operator := e.token(t, "alice", auth.Viewer), e.token(t, "bob", auth.Operator)
	things := e.url + "/v1/things"
	forged := auth.Prefix + strings.Repeat("a", 12) + "_" + strings.Repeat("b", 64)

	for _, tc := range []struct {
		name, method, token, ctype, body string
		want                             int
		wantErr                          string
	}{
		{"no token", "GET", "", "", "", 401, "authentication required"},
		{"not a token", "GET", "hunter2", "", "", 401, "unknown token"},
		{"forged token", "GET", forged, "", "", 401, "unknown token"},
		{"right id, wrong secret", "GET", flipLast(viewer), "", "", 401, "unknown token"},
		{"viewer reads", "GET", viewer, "", "", 200, ""},
		{"viewer submits", "POST", viewer, "application/yaml", "a: 1", 403, "token alice has role viewer; this needs operator"},
		{"operator submits yaml", "POST", operator, "application/yaml", "a: 1", 200, ""},
		{"operator submits json", "POST", operator, "application/json; charset=utf-8", `{"a":1}`, 200, ""},
		{"text/plain", "POST", operator, "text/plain", "a: 1", 415, `content type "text/plain": expected application/json or application/yaml`},
		{"form", "POST", operator, "application/x-www-form-urlencoded", "a=1", 415, "expected application/json or application/yaml"},
		{"no content type", "POST", operator, "", "a: 1", 415, `content type ""`},
		{"oversized", "POST", operator, "application/yaml", strings.Repeat("x", int(auth.DefaultLimits().MaxBodyBytes)+1), 413, "expected at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, things, tc.token, tc.ctype, tc.body)
			require.Equal(t, tc.want, a.code, a.raw)
			if tc.wantErr != "" {
				require.Contains(t, a.body["error"], tc.wantErr)
				require.Equal(t, "application/json", a.h.Get("Content-Type"))
			}
			if tc.want == 401 {
				require.Equal(t, `Bearer realm="greenflow"`, a.h.Get("WWW-Authenticate"))
			}
		})
	}
	require.Equal(t, "bob", do(t, "POST", things, operator, "application/json", "{}").body["by"], "the handler sees who asked")
}

func TestABodyOfUnknownLengthStopsAtTheLimit(t *testing.T) {
	lim := auth.DefaultLimits()
	lim.MaxBodyBytes = 100
	e := newEnv(t, lim)
	op := e.token(t, "op", auth.Operator)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(strings.Repeat("y", 1000)))
		_ = pw.Close()
	}()
	req, err := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/things", pr)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+op)
	req.Header.Set("Content-Type", "application/yaml")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
}

// flipLast changes a token's last hex digit.
func flipLast(tok string) string {
	last := "0"
	if strings.HasSuffix(tok, "0") {
		last = "1"
	}
	return tok[:len(tok)-1] + last
}

func TestRateLimitPerTokenAndPerClient(t *testing.T) {
	e := newEnv(t, auth.Limits{MaxBodyBytes: 1 << 20, RatePerSecond: 1, Burst: 3})
	a, b := e.token(t, "a", auth.Viewer), e.token(t, "b", auth.Viewer)
	url := e.url + "/v1/things"
	for range 3 {
		require.Equal(t, 200, do(t, "GET", url, a, "", "").code)
	}
	over := do(t, "GET", url, a, "", "")
	require.Equal(t, 429, over.code, over.raw)
	require.Equal(t, "1", over.h.Get("Retry-After"))
	require.Contains(t, over.body["error"], "too many requests with token a")
	require.Equal(t, 200, do(t, "GET", url, b, "", "").code, "another token has its own budget")
	e.clock.Step(time.Second)
	require.Equal(t, 200, do(t, "GET", url, a, "", "").code, "a second later one more request fits")

	// Without a valid token the client address is limited: guessing
	// tokens is as slow as anything else.
	for range 3 {
		require.Equal(t, 401, do(t, "GET", url, "", "", "").code)
	}
	require.Equal(t, 429, do(t, "GET", url, "", "", "").code)
}

func TestRevokedAndExpiredTokensAreRefused(t *testing.T) {
	e := newEnv(t, auth.DefaultLimits())
	ctx := t.Context()
	url := e.url + "/v1/things"
	plain, tok, err := e.store.Create(ctx, "temp", auth.Viewer, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 200, do(t, "GET", url, plain, "", "").code)
	e.clock.Step(time.Hour)
	a := do(t, "GET", url, plain, "", "")
	require.Equal(t, 401, a.code)
	require.Equal(t, "token expired", a.body["error"])

	other := e.token(t, "other", auth.Viewer)
	require.Equal(t, 200, do(t, "GET", url, other, "", "").code)
	_, err = e.store.Revoke(ctx, "other")
	require.NoError(t, err)
	a = do(t, "GET", url, other, "", "")
	require.Equal(t, 401, a.code)
	require.Equal(t, "token revoked", a.body["error"])

	// The expired token's name is free again; the revoked one's too.
	_, _, err = e.store.Create(ctx, "other", auth.Viewer, 0)
	require.NoError(t, err)
	_, err = e.store.Revoke(ctx, tok.ID)
	require.NoError(t, err)
}

func TestNoCORS(t *testing.T) {
	e := newEnv(t, auth.DefaultLimits())
	op := e.token(t, "op", auth.Operator)
	pre := do(t, "OPTIONS", e.url+"/v1/things", "", "", "", "Origin", "https://evil.example",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	require.NotEqual(t, 200, pre.code/100*100, "a preflight is not granted: %d", pre.code)
	require.Empty(t, pre.h.Get("Access-Control-Allow-Origin"))
	require.Empty(t, pre.h.Get("Access-Control-Allow-Headers"))
	got := do(t, "GET", e.url+"/v1/things", op, "", "", "Origin", "https://evil.example")
	require.Equal(t, 200, got.code)
	require.Empty(t, got.h.Get("Access-Control-Allow-Origin"))
}

func TestTokenAPI(t *testing.T) {
	e := newEnv(t, auth.DefaultLimits())
	admin, op := e.token(t, "root", auth.Admin), e.token(t, "op", auth.Operator)
	tokens := e.url + "/v1/tokens"

	require.Equal(t, 403, do(t, "POST", tokens, op, "application/json", `{"name":"x","role":"viewer"}`).code, "an operator manages no tokens")
	require.Equal(t, 403, do(t, "GET", tokens, op, "", "").code)

	c := do(t, "POST", tokens, admin, "application/json", `{"name":"ci","role":"operator","expires_in":"720h"}`)
	require.Equal(t, 201, c.code, c.raw)
	plain := c.body["token"].(string)
	require.True(t, strings.HasPrefix(plain, auth.Prefix), plain)
	require.Equal(t, "no-store", c.h.Get("Cache-Control"))
	require.EqualValues(t, time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).Add(720*time.Hour).UnixMilli(), c.body["expires_ms"])
	require.Equal(t, 200, do(t, "POST", e.url+"/v1/things", plain, "application/json", "{}").code, "the new token works")

	for _, bad := range []struct{ body, want string }{
		{`{"name":"ci","role":"viewer"}`, `token name "ci" is taken`},
		{`{"name":"x y","role":"viewer"}`, `token name "x y": expected`},
		{`{"name":"x","role":"god"}`, `role "god": expected`},
		{`{"name":"x","role":"viewer","expires_in":"soon"}`, `expires_in "soon": expected a positive duration`},
	} {
		a := do(t, "POST", tokens, admin, "application/json", bad.body)
		require.Equal(t, 422, a.code, a.raw)
		require.Contains(t, a.body["error"], bad.want)
	}

	l := do(t, "GET", tokens, admin, "", "")
	require.Equal(t, 200, l.code)
	require.NotContains(t, l.raw, plain[len(auth.Prefix)+13:], "the list shows no secret")
	require.NotContains(t, l.raw, "sha256", "nor a hash")
	var infos []auth.Info
	require.NoError(t, json.Unmarshal([]byte(l.raw), &infos))
	require.Len(t, infos, 3)

	r := do(t, "DELETE", tokens+"/ci", admin, "", "")
	require.Equal(t, 200, r.code, r.raw)
	require.NotZero(t, r.body["revoked_ms"])
	require.Equal(t, 401, do(t, "GET", e.url+"/v1/things", plain, "", "").code)
	require.Equal(t, 404, do(t, "DELETE", tokens+"/nobody", admin, "", "").code)
}

// No token reaches the logs: every refusal and success above is logged
// with the token's name and id at most.
func TestTokensNeverReachTheLogs(t *testing.T) {
	e := newEnv(t, auth.Limits{MaxBodyBytes: 64, RatePerSecond: 1, Burst: 2})
	admin, viewer := e.token(t, "root", auth.Admin), e.token(t, "v", auth.Viewer)
	c := do(t, "POST", e.url+"/v1/tokens", admin, "application/json", `{"name":"new","role":"operator"}`)
	require.Equal(t, 201, c.code)
	created := c.body["token"].(string)
	do(t, "POST", e.url+"/v1/things", viewer, "application/json", "{}")
	do(t, "POST", e.url+"/v1/things", created, "text/plain", "x")
	do(t, "POST", e.url+"/v1/things", created, "application/json", strings.Repeat("1", 100))
	_, err := e.store.Revoke(context.Background(), "v")
	require.NoError(t, err)
	do(t, "GET", e.url+"/v1/things", viewer, "", "")
	for range 3 {
		do(t, "GET", e.url+"/v1/things", created, "", "")
	}
	require.NotZero(t, e.logs.Len(), "the refusals were logged")
	for _, secret := range []string{admin, viewer, created} {
		requireNotLogged(t, e.logs, secret)
	}
}

func requireNotLogged(t *testing.T, logs *observer.ObservedLogs, secret string) {
	t.Helper()
	hexPart := secret[len(auth.Prefix)+13:]
	for _, entry := range logs.All() {
		b, err := json.Marshal(entry.ContextMap())
		require.NoError(t, err)
		line := entry.Message + " " + string(b)
		require.NotContains(t, line, hexPart, "a log entry holds a token's secret: %s", line)
	}
}

// A token's name cannot look like a token id: revoke takes either, and a
// name equal to another token's id made `token revoke <id>` revoke the
// other token while the named one stayed live (found by a trial).
func TestANameCannotShadowAnID(t *testing.T) {
	require.NoError(t, auth.ValidName("ci-runner"))
	require.NoError(t, auth.ValidName("e1a124e228b7x"))
	require.ErrorContains(t, auth.ValidName("e1a124e228b7"), "looks like a token id")
}

// TestAdoptedTokenWorksOnceAndStaysRevoked: a token drawn offline (a
// cluster's first admin token, put into a Secret before NATS exists) works
// at the API once adopted; adopting it again changes nothing; once revoked,
// adopting it again does not bring it back.
func TestAdoptedTokenWorksOnceAndStaysRevoked(t *testing.T) {
	e := newEnv(t, auth.DefaultLimits())
	ctx := t.Context()
	url := e.url + "/v1/things"
	plain, err := auth.Draw()
	require.NoError(t, err)
	require.Equal(t, 401, do(t, "GET", url, plain, "", "").code, "not adopted yet")
	first, err := e.store.Adopt(ctx, "cluster-admin", auth.Admin, plain)
	require.NoError(t, err)
	require.Equal(t, auth.Admin, first.Role)
	require.Equal(t, 200, do(t, "GET", url, plain, "", "").code)
	again, err := e.store.Adopt(ctx, "cluster-admin", auth.Admin, plain)
	require.NoError(t, err)
	require.Equal(t, first, again)

	other, err := auth.Draw()
	require.NoError(t, err)
	_, err = e.store.Adopt(ctx, "cluster-admin", auth.Admin, other)
	require.ErrorContains(t, err, `token name "cluster-admin" is taken`)
	_, err = e.store.Adopt(ctx, "x", auth.Admin, "gft_not-a-token")
	require.Error(t, err)

	_, err = e.store.Revoke(ctx, first.ID)
	require.NoError(t, err)
	_, err = e.store.Adopt(ctx, "cluster-admin", auth.Admin, plain)
	require.ErrorIs(t, err, auth.ErrRevoked)
	require.Equal(t, 401, do(t, "GET", url, plain, "", "").code, "revoked stays revoked")
}

// A token the API cannot check (its token store unreachable: here its NATS
// connection is closed) is refused with 503, not 401: the client's token
// may be fine, and a 401 would send its user looking for another.
func TestAnUncheckableTokenIsRefusedWith503(t *testing.T) {
	b, st := openStore(t, nil)
	plain, _, err := st.Create(t.Context(), "alice", auth.Viewer, 0)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("GET /v1/things", auth.NewGuard(st, auth.DefaultLimits(), nil, zap.NewNop()).Require(auth.Viewer, http.NotFoundHandler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b.Close()
	a := do(t, "GET", srv.URL+"/v1/things", plain, "", "")
	require.Equal(t, http.StatusServiceUnavailable, a.code, a.raw)
	require.Contains(t, a.body["error"], "the token could not be checked now")
	require.Empty(t, a.h.Get("WWW-Authenticate"))
}
