// Package service is the small runtime every GreenFlow binary shares: a zap
// logger, an injected Prometheus registry served on /metrics beside /healthz,
// signal handling, and a runner that starts components together and stops
// them all when one fails or the process is asked to stop.
package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ShutdownTimeout bounds how long a component may take to drain after its
// context is cancelled.
const ShutdownTimeout = 10 * time.Second

// Component is the lifecycle every long-running part follows: Run blocks until
// ctx ends and returns nil on a clean cancel.
type Component interface {
	Run(ctx context.Context) error
}

// Checker is implemented by a component that can tell whether it is able
// to do its work right now (its NATS consumers and KV buckets are there, its
// broker is reachable, ...): nil means ready. /healthz reports not ready,
// with the reason, while any component's Check fails. Check is called from
// HTTP handlers: it must be cheap and safe for concurrent use (report state
// kept by the component, do no I/O).
type Checker interface {
	Check() error
}

// Initializer is implemented by a component that has work to finish
// before it can serve — declare its consumers, sync a KV view. The Group
// calls Init before Run; the component counts as started (and /healthz can
// say ready) only once Init has returned nil. An Init error fails the
// group, so the service exits non-zero.
type Initializer interface {
	Init(ctx context.Context) error
}

// Func adapts a function to Component.
type Func func(ctx context.Context) error

// Run implements Component.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Group runs components together: when one returns (error or not) the others
// are cancelled, and Run returns the first non-nil error. It is a Checker:
// not ready while any component is starting (Init not done) or stopped, or
// its own Check fails.
type Group struct {
	names  []string
	comps  []Component
	states []*atomic.Int32
}

// Component states, for Check.
const (
	stateStarting int32 = iota
	stateRunning
	stateStopped
)

// Add registers a named component.
func (g *Group) Add(name string, c Component) {
	g.names = append(g.names, name)
	g.comps = append(g.comps, c)
	g.states = append(g.states, new(atomic.Int32))
}

// Check reports every component that is not ready, by name.
func (g *Group) Check() error {
	var errs []error
	for i, c := range g.comps {
		switch g.states[i].Load() {
		case stateStarting:
			errs = append(errs, fmt.Errorf("%s: starting", g.names[i]))
		case stateStopped:
			errs = append(errs, fmt.Errorf("%s: stopped", g.names[i]))
		default:
			if ch, ok := c.(Checker); ok {
				if err := ch.Check(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", g.names[i], err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Run initializes (Initializer) and starts every component and blocks
// until all have stopped.
func (g *Group) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rg run.Group
	for i, c := range g.comps {
		name, c, state := g.names[i], c, g.states[i]
		done := make(chan struct{})
		rg.Add(func() error {
			defer close(done)
			defer state.Store(stateStopped)
			if in, ok := c.(Initializer); ok {
				if err := in.Init(ctx); err != nil {
					if ctx.Err() != nil {
						return nil // stopped while starting
					}
					return fmt.Errorf("%s: init: %w", name, err)
				}
			}
			if ctx.Err() == nil {
				state.Store(stateRunning)
			}
			if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}, func(error) {
			cancel()
			select {
			case <-done:
			case <-time.After(ShutdownTimeout):
			}
		})
	}
	// A component that returns nil while the context is live ends the group;
	// that is intended (e.g. a one-shot job), but cancellation must propagate.
	rg.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	return rg.Run()
}

// NewLogger builds a production zap logger (JSON) or a console one.
func NewLogger(level string, console bool) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: expected debug, info, warn or error", level)
	}
	cfg := zap.NewProductionConfig()
	if console {
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		cfg.DisableStacktrace = true
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	return cfg.Build()
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Health is what /healthz serves: ready when SetReady(true) was called and
// every added Checker passes; otherwise 503 with every reason.
type Health struct {
	ready  atomic.Bool
	mu     sync.Mutex
	checks []namedCheck
}

type namedCheck struct {
	name string
	c    Checker
}

// SetReady marks the service ready (or not), on top of the checks.
func (h *Health) SetReady(v bool) { h.ready.Store(v) }

// Add makes readiness depend on c; its problems are reported under name
// ("" reports them as they are, e.g. for a Group that names its own).
func (h *Health) Add(name string, c Checker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name, c})
}

// Check is nil when the service is ready, or every reason it is not.
func (h *Health) Check() error {
	var errs []error
	if !h.ready.Load() {
		errs = append(errs, errors.New("starting"))
	}
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	h.mu.Unlock()
	for _, nc := range checks {
		err := nc.c.Check()
		switch {
		case err == nil:
		case nc.name == "":
			errs = append(errs, err)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", nc.name, err))
		}
	}
	return errors.Join(errs...)
}

// HTTPServer serves /metrics and /healthz (plus any extra handlers) and drains
// on shutdown. Every handler registered on Mux runs behind Recover, so a
// panic in one service's API answers 500 and leaves the process serving.
type HTTPServer struct {
	Addr    string
	Mux     *http.ServeMux
	Logger  *zap.Logger
	handler http.Handler
	started chan string
}

// NewHTTPServer builds the server; no I/O happens until Run.
func NewHTTPServer(addr string, reg *prometheus.Registry, health *Health, logger *zap.Logger) *HTTPServer {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if health != nil {
			if err := health.Check(); err != nil {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, "not ready:\n- %s\n", strings.ReplaceAll(err.Error(), "\n", "\n- "))
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	panics := prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_http_handler_panics_total",
		Help: "HTTP handler panics recovered (answered 500)."})
	if err := reg.Register(panics); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if c, ok := are.ExistingCollector.(prometheus.Counter); ok {
				panics = c
			}
		}
	}
	return &HTTPServer{Addr: addr, Mux: mux, Logger: logger, handler: Recover(mux, logger, panics), started: make(chan string, 1)}
}

// Handler is what the server serves: Mux behind Recover. Tests drive a
// service's API through it (httptest) to get the same protection.
func (s *HTTPServer) Handler() http.Handler { return s.handler }

// Recover wraps h so that a panic in a handler is logged with its stack
// (one zap field), counted on panics (may be nil), and answered with 500
// when nothing was written yet; the server goes on serving other requests.
// http.ErrAbortHandler keeps its meaning (abort the response silently).
func Recover(h http.Handler, logger *zap.Logger, panics prometheus.Counter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			if panics != nil {
				panics.Inc()
			}
			logger.Error("http handler panicked", zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.String("panic", fmt.Sprint(v)), zap.ByteString("stack", debug.Stack()))
			if rw.wrote {
				return // the status is out; the client sees a cut response
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"internal error: the request could not be handled (logged)"}` + "\n"))
		}()
		h.ServeHTTP(rw, r)
	})
}

// trackingWriter records whether a handler started its response.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Flush passes streaming flushes through.
func (t *trackingWriter) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		t.wrote = true
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// Listening returns a channel that yields the bound address once listening.
func (s *HTTPServer) Listening() <-chan string { return s.started }

// Run listens until ctx ends, then shuts down within ShutdownTimeout.
// An empty address disables the server.
func (s *HTTPServer) Run(ctx context.Context) error {
	if s.Addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Addr, err)
	}
	s.started <- ln.Addr().String()
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.Logger.Info("http server listening", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", s.Addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Exit prints err and exits non-zero; it is for main functions only.
func Exit(name string, err error) {
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}
