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
// with the reason, while any component's Check fails.
type Checker interface {
	Check() error
}

// Func adapts a function to Component.
type Func func(ctx context.Context) error

// Run implements Component.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Group runs components together: when one returns (error or not) the others
// are cancelled, and Run returns the first non-nil error.
type Group struct {
	names []string
	comps []Component
}

// Add registers a named component.
func (g *Group) Add(name string, c Component) {
	g.names = append(g.names, name)
	g.comps = append(g.comps, c)
}

// Run starts every component and blocks until all have stopped.
func (g *Group) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rg run.Group
	for i, c := range g.comps {
		name, c := g.names[i], c
		done := make(chan struct{})
		rg.Add(func() error {
			defer close(done)
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

// Health is a readiness flag served on /healthz.
type Health struct{ ready atomic.Bool }

// SetReady marks the service ready (or not).
func (h *Health) SetReady(v bool) { h.ready.Store(v) }

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
		if health != nil && !health.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
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
