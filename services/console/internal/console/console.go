package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
)

//go:embed web
var webFS embed.FS

// Deps are the console's dependencies.
type Deps struct {
	// Bus watches the lifecycle events and reaches the token bucket.
	Bus *bus.Bus
	// Store reads ClickHouse as the read-only user.
	Store *store.Store
	// Tokens verifies sign-ins; nil: the token bucket on Bus.
	Tokens auth.Verifier
	// SchedulerURL finds the scheduler's API base URL; nil: cfg.SchedulerURL.
	// The dev stack knows it only once its server listens.
	SchedulerURL func(ctx context.Context) (string, error)
	// AnalyzerURL finds the analyzer's results API; nil: cfg.AnalyzerURL.
	AnalyzerURL func(ctx context.Context) (string, error)
	// HTTPClient calls the scheduler; nil: a client of its own, trusting
	// cfg.APICAFile's CA (read by Init).
	HTTPClient *http.Client
	Logger     *zap.Logger
	Registry   prometheus.Registerer
	Clock      clock.WithTicker
}

// Console serves the web console. New does no I/O; Init reads the session
// key; Run serves until ctx ends.
type Console struct {
	cfg     Config
	deps    Deps
	logger  *zap.Logger
	clock   clock.WithTicker
	tokens  auth.Verifier
	api     *schedulerAPI
	pages   map[string]*template.Template
	handler http.Handler
	secure  bool
	sealer  *sealer
	hubs    *hubs
	m       metrics

	// ownClient: the console made api's client, so Init makes it trust
	// cfg.APICAFile.
	ownClient bool

	addrOnce sync.Once
	addr     string
	ready    chan struct{}
}

type metrics struct {
	viewers  prometheus.Gauge
	hubs     prometheus.Gauge
	polls    prometheus.Counter
	pollErrs prometheus.Counter
	requests *prometheus.CounterVec
}

var _ service.Initializer = (*Console)(nil)

// New builds the console.
func New(cfg Config, d Deps) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Tokens == nil {
		if d.Bus == nil {
			return nil, errors.New("console: no token verifier and no bus to read the token bucket from")
		}
		d.Tokens = auth.OnBus(d.Bus, d.Clock)
	}
	if d.SchedulerURL == nil {
		u := cfg.SchedulerURL
		d.SchedulerURL = func(context.Context) (string, error) { return u, nil }
	}
	if d.AnalyzerURL == nil {
		u := cfg.AnalyzerURL
		d.AnalyzerURL = func(context.Context) (string, error) { return u, nil }
	}
	ownClient := d.HTTPClient == nil
	if ownClient {
		d.HTTPClient = &http.Client{Timeout: apiTimeout}
	}
	c := &Console{cfg: cfg, deps: d, logger: d.Logger.With(zap.String("component", "console")), clock: d.Clock, tokens: d.Tokens,
		api: &schedulerAPI{base: d.SchedulerURL, hc: d.HTTPClient}, secure: cfg.TLSCertFile != "" || cfg.BehindTLS,
		ownClient: ownClient, ready: make(chan struct{})}
	c.m = metrics{
		viewers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_console_live_viewers", Help: "Browsers watching an experiment live (SSE streams open)."}),
		hubs:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_console_live_experiments", Help: "Experiments watched live: one lifecycle watch and one ClickHouse poll each."}),
		polls:   prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_console_live_polls_total", Help: "ClickHouse reads of live figures (one per watched experiment per poll interval)."}),
		pollErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_console_live_poll_errors_total",
			Help: "ClickHouse reads of live figures that failed (the viewers keep the previous figures)."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_console_requests_total", Help: "Console requests by page and status class."},
			[]string{"page", "code"}),
	}
	if err := service.Register(d.Registry, "console", c.m.viewers, c.m.hubs, c.m.polls, c.m.pollErrs, c.m.requests); err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c.pages = pages
	c.hubs = newHubs(c)
	static, _ := fs.Sub(webFS, "web/static")
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	c.routes(mux)
	c.handler = securityHeaders(service.Recover(mux, c.logger, nil))
	return c, nil
}

// apiTimeout bounds each call of the scheduler's and analyzer's APIs.
const apiTimeout = 30 * time.Second

// Init reads the session key (or makes one), and the CA the APIs'
// certificates are checked against.
func (c *Console) Init(context.Context) error {
	if c.ownClient && c.cfg.APICAFile != "" {
		hc, err := service.HTTPClientTrusting(c.cfg.APICAFile, apiTimeout)
		if err != nil {
			return fmt.Errorf("console.apiCAFile: %w", err)
		}
		c.api.hc = hc
	}
	key, err := sessionKey(c.cfg.SessionKeyFile)
	if err != nil {
		return err
	}
	c.sealer, err = newSealer(key)
	return err
}

// Handler is the console's whole HTTP handler (tests serve it with
// httptest after Init).
func (c *Console) Handler() http.Handler { return c.handler }

// Run serves the console until ctx ends; live streams end with it.
func (c *Console) Run(ctx context.Context) error {
	if c.sealer == nil {
		if err := c.Init(ctx); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", c.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.cfg.Addr, err)
	}
	scheme := "http"
	if c.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.cfg.TLSCertFile, c.cfg.TLSKeyFile)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("load the console's TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	c.addrOnce.Do(func() { c.addr = scheme + "://" + ln.Addr().String(); close(c.ready) })
	// Handlers see ctx: a live stream ends when the console stops, so the
	// drain below does not wait for browsers.
	srv := &http.Server{Handler: c.handler, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	c.logger.Info("console listening", zap.String("url", c.addr))
	select {
	case err := <-errc:
		return fmt.Errorf("serve the console on %s: %w", c.cfg.Addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), service.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down the console: %w", err)
	}
	return nil
}

// URL waits until the console listens and returns its base URL.
func (c *Console) URL(ctx context.Context) (string, error) {
	select {
	case <-c.ready:
		return c.addr, nil
	case <-ctx.Done():
		return "", fmt.Errorf("wait for the console to listen: %w", ctx.Err())
	}
}

// securityHeaders: no framing, no sniffing, scripts and styles from the
// console only (there is no third-party anything to allow).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		h.ServeHTTP(w, r)
	})
}
