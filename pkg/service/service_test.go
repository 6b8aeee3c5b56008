package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// startServer runs an HTTPServer on a free port until the test ends.
func startServer(t testing.TB, reg *prometheus.Registry, health *service.Health, register func(*http.ServeMux)) string {
	t.Helper()
	srv := service.NewHTTPServer("127.0.0.1:0", reg, health, testenv.Logger(t))
	register(srv.Mux)
	run := testenv.Go(t, context.Background(), srv.Run)
	t.Cleanup(func() { require.NoError(t, run.Stop(10*time.Second, "the http server")) })
	select {
	case addr := <-srv.Listening():
		return "http://" + addr
	case <-run.Exited():
		t.Fatalf("http server did not start: %v", run.Err())
	case <-time.After(10 * time.Second):
		t.Fatal("http server did not start")
	}
	return ""
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// Any handler on a service's mux that panics answers 500 with a JSON error,
// is counted, and the server goes on serving.
func TestPanickingHTTPHandlerAnswers500AndTheServerKeepsServing(t *testing.T) {
	reg := prometheus.NewRegistry()
	url := startServer(t, reg, nil, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) {
			var m map[string]int
			m["x"] = 1
		})
		mux.HandleFunc("GET /fine", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("fine")) })
	})
	code, body := get(t, url+"/boom")
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, body, `"error":"internal error`)
	code, body = get(t, url+"/fine")
	require.Equal(t, http.StatusOK, code, "the server keeps serving after a panic")
	require.Equal(t, "fine", body)
	code, body = get(t, url+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "greenflow_http_handler_panics_total 1")
}

// A handler that already sent its status cannot be turned into a 500; the
// response is cut and the panic still contained.
func TestPanicAfterTheResponseStartedIsContained(t *testing.T) {
	reg := prometheus.NewRegistry()
	url := startServer(t, reg, nil, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /half", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("partial"))
			panic(errors.New("late defect"))
		})
	})
	resp, err := http.Get(url + "/half")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.True(t, strings.HasPrefix(string(b), "partial"))
	code, _ := get(t, url+"/metrics")
	require.Equal(t, http.StatusOK, code, "still serving")
}

// slowStarter needs an Init before it can work, and can tell whether it
// can work (its Check) afterwards.
type slowStarter struct {
	release testenv.Gate
	broken  atomic.Pointer[string]
}

func (s *slowStarter) Init(ctx context.Context) error { return s.release.Wait(ctx) }

func (s *slowStarter) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (s *slowStarter) Check() error {
	if p := s.broken.Load(); p != nil {
		return errors.New(*p)
	}
	return nil
}

// /healthz answers 503 with every reason until each component has started
// (after its Init) and while any component's Check fails; 200 otherwise.
func TestHealthzWaitsForInitAndReportsEveryFailingCheck(t *testing.T) {
	health := &service.Health{}
	reg := prometheus.NewRegistry()
	srv := service.NewHTTPServer("127.0.0.1:0", reg, health, testenv.Logger(t))
	comp := &slowStarter{release: testenv.NewGate()}
	var g service.Group
	g.Add("http", srv)
	g.Add("worker", comp)
	g.Add("plain", service.Func(func(ctx context.Context) error { <-ctx.Done(); return nil }))
	health.Add("", &g)
	health.Add("nats", checkFunc(func() error { return errors.New("nats connection reconnecting") }))
	health.SetReady(true)

	group := testenv.Go(t, context.Background(), g.Run)
	url := "http://" + testenv.Receive(t, srv.Listening(), 10*time.Second, "the server listening") + "/healthz"

	code, body := get(t, url)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "- worker: starting")
	require.Contains(t, body, "- nats: nats connection reconnecting")

	comp.release.Open()
	broken := "broker unreachable"
	comp.broken.Store(&broken)
	testenv.Eventually(t, 10*time.Second, "worker started", func() bool {
		_, body := get(t, url)
		return !strings.Contains(body, "worker: starting")
	})
	code, body = get(t, url)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "- worker: broker unreachable")
	require.NotContains(t, body, "plain", "a component without Init or Check is ready once running")

	comp.broken.Store(nil)
	health.Add("later", checkFunc(func() error { return nil }))
	code, body = get(t, url)
	require.Equal(t, http.StatusServiceUnavailable, code, "nats still down: %s", body)
	require.NotContains(t, body, "worker")

	require.NoError(t, group.Stop(10*time.Second, "the group"))
	require.ErrorContains(t, g.Check(), "worker: stopped")
}

// When every check passes, /healthz is 200.
func TestHealthzIsOKWhenEverythingIs(t *testing.T) {
	health := &service.Health{}
	health.Add("nats", checkFunc(func() error { return nil }))
	url := startServer(t, prometheus.NewRegistry(), health, func(*http.ServeMux) {})
	code, body := get(t, url+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code, "SetReady not yet called")
	require.Contains(t, body, "- starting")
	health.SetReady(true)
	code, body = get(t, url+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
}

// An Init that fails fails the group, naming the component.
func TestInitFailureFailsTheGroup(t *testing.T) {
	var g service.Group
	g.Add("broken", initFails{})
	g.Add("other", service.Func(func(ctx context.Context) error { <-ctx.Done(); return nil }))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.ErrorContains(t, g.Run(ctx), "broken: init: consumer scheduler: stream not found")
}

type initFails struct{}

func (initFails) Init(context.Context) error {
	return errors.New("consumer scheduler: stream not found")
}
func (initFails) Run(context.Context) error { return nil }

type checkFunc func() error

func (f checkFunc) Check() error { return f() }

// Register registers every metric, reports every one it could not (a name
// taken twice) at once with whose metrics they are, and does nothing
// without a registry.
func TestRegisterReportsEveryFailure(t *testing.T) {
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_test_a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_test_b_total", Help: "b"})
	reg := prometheus.NewRegistry()
	require.NoError(t, service.Register(reg, "first", a, b))
	err := service.Register(reg, "second", prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_test_a_total", Help: "a"}),
		prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_test_b_total", Help: "b"}))
	require.ErrorContains(t, err, "register second metrics")
	var already prometheus.AlreadyRegisteredError
	require.ErrorAs(t, err, &already)
	require.Len(t, err.(interface{ Unwrap() error }).Unwrap().(interface{ Unwrap() []error }).Unwrap(), 2, "both failures")
	require.NoError(t, service.Register(nil, "none", a))
}
