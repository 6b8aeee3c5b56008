package console_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/testenv"
	consoleapp "github.com/greenflow/greenflow/services/console/app"
	"github.com/greenflow/greenflow/services/console/internal/console"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a console in front of a real scheduler (its HTTP API, its KV
// state) on embedded JetStream and the test ClickHouse.
type env struct {
	tb        testing.TB
	bus       *bus.Bus // the test's own (admin-like) connection
	store     *store.Store
	dsn       string // the store's database, for a CLI command run on it
	tokens    *auth.Store
	api       string       // the scheduler's API
	apiClient *http.Client // trusts the API's certificate when it serves HTTPS
	console   *console.Console
	url       string // the console
	reg       *prometheus.Registry
	scheduler service.Component
}

// newEnv starts a scheduler serving its API and a console in front of it;
// mod changes the console's configuration.
func newEnv(tb testing.TB, mod func(*console.Config)) *env {
	tb.Helper()
	return newEnvServing(tb, nil, mod)
}

// newEnvServing is newEnv with the scheduler's API served over HTTPS with
// apiTLS's certificate (nil: plain HTTP).
func newEnvServing(tb testing.TB, apiTLS *testenv.TestTLS, mod func(*console.Config)) *env {
	tb.Helper()
	natsURL := testenv.NATS(tb)
	e := &env{tb: tb, bus: testenv.Bus(tb, natsURL, "test"), dsn: testenv.ClickHouseDSN(tb), reg: prometheus.NewRegistry()}
	e.store = testenv.StoreOn(tb, e.dsn)
	ctx, cancel := context.WithCancel(context.Background())
	var g service.Group
	// The scheduler, as its binary builds it, with its API on a mux.
	scfg := schedulerapp.Service.Default()
	scfg.Brokers = []string{"127.0.0.1:9"}
	scfg.HTTP.RatePerSecond, scfg.HTTP.Burst = 1e6, 1e6
	mux := http.NewServeMux()
	sched, err := schedulerapp.Service.Unit(scfg).Build(svcmain.Deps{Name: "scheduler", Bus: testenv.Bus(tb, natsURL, "scheduler"), Store: e.store,
		Logger: testenv.Logger(tb), Registry: prometheus.NewRegistry(), Mux: mux})
	require.NoError(tb, err)
	g.Add("scheduler", sched)
	api := httptest.NewUnstartedServer(mux)
	if apiTLS != nil {
		api.TLS = &tls.Config{Certificates: []tls.Certificate{apiTLS.Cert}}
		api.StartTLS()
	} else {
		api.Start()
	}
	tb.Cleanup(api.Close)
	e.api, e.apiClient = api.URL, api.Client()
	cfg := console.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.SchedulerURL = api.URL
	cfg.PollInterval = 200 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	e.console, err = consoleapp.NewWith(cfg, svcmain.Deps{Name: "console", Bus: testenv.Bus(tb, natsURL, "console"), Store: e.store,
		Logger: testenv.Logger(tb), Registry: e.reg}, nil)
	require.NoError(tb, err)
	g.Add("console", e.console)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		require.NoError(tb, <-done)
	})
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	e.url, err = e.console.URL(wctx)
	require.NoError(tb, err)
	e.tokens, err = auth.OpenStore(wctx, e.bus, nil)
	require.NoError(tb, err)
	// Ready once the scheduler's view is loaded (it answers 503 before).
	admin := e.token("ready-check", auth.Admin)
	testenv.Eventually(tb, time.Minute, "the scheduler's API is ready", func() bool {
		resp := e.askScheduler(admin, "/v1/experiments?limit=1")
		return resp != nil && resp.StatusCode == http.StatusOK
	})
	return e
}

// askScheduler sends GET path to the scheduler's API with token and
// returns the response, its body closed; nil when the API cannot be
// reached (yet).
func (e *env) askScheduler(token, path string) *http.Response {
	req, _ := http.NewRequest(http.MethodGet, e.api+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.apiClient.Do(req)
	if err != nil {
		return nil
	}
	resp.Body.Close()
	return resp
}

// token creates an API token with role and returns it.
func (e *env) token(name string, role auth.Role) string {
	e.tb.Helper()
	plain, _, err := e.tokens.Create(context.Background(), name, role, 0)
	require.NoError(e.tb, err)
	return plain
}

// browser is an HTTP client with cookies, as a browser is; it follows no
// redirect by itself (the tests look at them).
type browser struct {
	tb   testing.TB
	base string
	hc   *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{tb: e.tb, base: e.url, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get fetches path and returns the status, the body and the response.
func (b *browser) get(path string) (int, string, *http.Response) {
	b.tb.Helper()
	return b.read(b.hc.Get(b.base + path))
}

// post submits a form to path.
func (b *browser) post(path string, form url.Values) (int, string, *http.Response) {
	b.tb.Helper()
	return b.read(b.hc.PostForm(b.base+path, form))
}

// read reads a response whole and returns its status, its body and the
// response.
func (b *browser) read(resp *http.Response, err error) (int, string, *http.Response) {
	b.tb.Helper()
	require.NoError(b.tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(b.tb, err)
	return resp.StatusCode, string(body), resp
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of a page's forms.
func csrf(tb testing.TB, page string) string {
	tb.Helper()
	m := csrfField.FindStringSubmatch(page)
	require.NotNil(tb, m, "the page has a form with a CSRF token")
	return m[1]
}

// signIn signs the browser in with token and requires it worked.
func (b *browser) signIn(token string) {
	b.tb.Helper()
	code, page, _ := b.get("/signin")
	require.Equal(b.tb, http.StatusOK, code)
	code, body, resp := b.post("/signin", url.Values{"token": {token}, "csrf": {csrf(b.tb, page)}, "next": {"/"}})
	require.Equal(b.tb, http.StatusSeeOther, code, body)
	require.Equal(b.tb, "/", resp.Header.Get("Location"))
}

// signedIn is a browser signed in with a new token of a user of role.
func (e *env) signedIn(name string, role auth.Role) *browser {
	e.tb.Helper()
	b := e.browser()
	b.signIn(e.token(name, role))
	return b
}

// seed writes finished experiments into the scheduler's bucket, as the
// scheduler leaves them, and waits until its API lists them all.
func (e *env) seed(n int, base time.Time, rec func(i int, r map[string]any)) {
	e.tb.Helper()
	ctx := context.Background()
	kv, err := e.bus.KV(ctx, bus.BucketScheduler)
	require.NoError(e.tb, err)
	for i := range n {
		r := map[string]any{"id": fmt.Sprintf("exp-%05d", i), "name": "seeded", "state": events.ExperimentStateDone, "run_ids": []string{},
			"created_ms": base.Add(time.Duration(i) * time.Second).UnixMilli(), "submitted_by": "http:alice"}
		if rec != nil {
			rec(i, r)
		}
		b, _ := json.Marshal(r)
		_, err := kv.Put(ctx, "exp."+r["id"].(string), b)
		require.NoError(e.tb, err)
	}
	admin := e.token(testenv.UniqueName("seed"), auth.Admin)
	testenv.Eventually(e.tb, 2*time.Minute, "the scheduler lists the seeded experiments", func() bool {
		resp := e.askScheduler(admin, "/v1/experiments?limit=1&q=exp-")
		return resp != nil && resp.Header.Get("X-Total-Count") == fmt.Sprint(n)
	})
}

// rows counts the experiment rows of a list page.
func rows(page string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<a href="/experiments/([^"]+)">`).FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// eventually waits up to a minute for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, time.Minute, what, cond)
}
