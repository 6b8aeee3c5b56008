package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// HTTPServer serves /metrics and /healthz (plus any extra handlers) and drains
// on shutdown. Every handler registered on Mux runs behind Recover, so a
// panic in one service's API answers 500 and leaves the process serving.
//
// /metrics and /healthz need no token, unlike every API route (each
// service wraps its routes with pkg/auth): Kubernetes probes and
// Prometheus scrape them without credentials, and they reveal nothing
// about experiments — counters, and which component is not ready.
type HTTPServer struct {
	Addr   string
	Mux    *http.ServeMux
	Logger *zap.Logger
	// Limits bound what a client may hold of the server (DefaultHTTPLimits
	// unless changed before Run); TLS serves HTTPS when set.
	Limits  HTTPLimits
	TLS     HTTPTLS
	handler http.Handler
	started chan string
}

// HTTPLimits are the timeouts and sizes of every connection, the same for
// every service's server: without them a client that sends its request a
// byte at a time (slowloris), or never reads its answer, holds a
// connection and its goroutine for ever.
//
// Write bounds the whole answer. A handler that streams for longer (an
// export, server-sent events) opts out for its own request with
// StreamResponse, which clears its write deadline.
type HTTPLimits struct {
	ReadHeader     time.Duration // the request line and headers
	Read           time.Duration // the whole request, body included (bodies are small: pkg/auth bounds them)
	Write          time.Duration // from the end of the headers to the end of the answer
	Idle           time.Duration // a kept-alive connection between requests
	MaxHeaderBytes int
}

// DefaultHTTPLimits: a request arrives within 30 s (headers within 5 s),
// an answer is written within 2 min, an idle connection closes after 2 min,
// and headers (a bearer token is ~90 bytes) stay under 64 KiB.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{ReadHeader: 5 * time.Second, Read: 30 * time.Second, Write: 2 * time.Minute, Idle: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10}
}

// StreamResponse lifts the write deadline of w's request, for a handler
// whose answer may outlast HTTPLimits.Write (a long export, an event
// stream); the handler should then end when its request's context does.
func StreamResponse(w http.ResponseWriter) error {
	if err := http.NewResponseController(w).SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("lift the write deadline of a streamed answer: %w", err)
	}
	return nil
}

// HTTPTLS are the server certificate and key (PEM files) of an HTTP
// server; both empty serves plain HTTP. A bearer token crosses every
// request, so any API reachable beyond the machine wants TLS.
type HTTPTLS struct {
	CertFile string `flag:"http-tls-cert-file" help:"PEM certificate (chain) for serving the HTTP APIs, /metrics and /healthz over TLS (with --http-tls-key-file); empty serves plain HTTP"`
	KeyFile  string `flag:"http-tls-key-file" help:"PEM private key of --http-tls-cert-file"`
}

// Validate: both files or neither.
func (t HTTPTLS) Validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("http tls: got --http-tls-cert-file %q and --http-tls-key-file %q, expected both or neither", t.CertFile, t.KeyFile)
	}
	return nil
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
	return &HTTPServer{Addr: addr, Mux: mux, Logger: logger, Limits: DefaultHTTPLimits(), handler: Recover(mux, logger, panics), started: make(chan string, 1)}
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
	if err := s.TLS.Validate(); err != nil {
		return err
	}
	var certs []tls.Certificate
	if s.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLS.CertFile, s.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("load the http server's tls certificate %s and key %s: %w", s.TLS.CertFile, s.TLS.KeyFile, err)
		}
		certs = []tls.Certificate{cert}
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Addr, err)
	}
	s.started <- ln.Addr().String()
	l := s.Limits
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: l.ReadHeader, ReadTimeout: l.Read, WriteTimeout: l.Write,
		IdleTimeout: l.Idle, MaxHeaderBytes: l.MaxHeaderBytes, ErrorLog: zap.NewStdLog(s.Logger.Named("http"))}
	if certs != nil {
		srv.TLSConfig = &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.Logger.Info("http server listening", zap.String("addr", ln.Addr().String()), zap.Bool("tls", certs != nil))
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
