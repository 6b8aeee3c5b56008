package console

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Config configures the console.
type Config struct {
	// Addr is where the console serves its pages (its own listener, apart
	// from /metrics and /healthz: it is what people's browsers reach).
	Addr string `yaml:"addr" flag:"console-addr" help:"address the console's pages are served on"`
	// SchedulerURL is the base URL of the scheduler's HTTP API, which every
	// action and every experiment read goes through with the user's token.
	SchedulerURL string `yaml:"schedulerURL" flag:"scheduler-url" help:"base URL of the scheduler's HTTP API (actions are taken there with the signed-in user's token)"`
	// AnalyzerURL is the base URL of the analyzer's results API (the
	// history pages), read with the user's token too.
	AnalyzerURL string `yaml:"analyzerURL" flag:"analyzer-url" help:"base URL of the analyzer's results API (read with the signed-in user's token)"`
	// APICAFile is the CA that signed the scheduler's and the analyzer's
	// HTTPS certificates (in a cluster, its own CA): the console checks
	// them against it before it sends a user's token.
	APICAFile string `yaml:"apiCAFile" flag:"api-ca-file" help:"PEM file of the CA that signed the https scheduler's and analyzer's certificates (empty: the system's CAs)"`
	// TLSCertFile and TLSKeyFile make the console serve HTTPS (and its
	// session cookie Secure).
	TLSCertFile string `yaml:"tlsCertFile" flag:"tls-cert-file" help:"serve HTTPS with this certificate (PEM); with --tls-key-file"`
	TLSKeyFile  string `yaml:"tlsKeyFile" flag:"tls-key-file" help:"the private key (PEM) of --tls-cert-file"`
	// BehindTLS marks the session cookie Secure when a proxy in front
	// terminates TLS.
	BehindTLS bool `yaml:"behindTLS" flag:"behind-tls" help:"a proxy in front terminates TLS: mark the session cookie Secure"`
	// SessionKeyFile holds the key sessions are sealed with (at least 32
	// bytes); replicas given the same key share sessions. Empty: a random
	// key per process (sessions end with it).
	SessionKeyFile string `yaml:"sessionKeyFile" flag:"session-key-file" help:"file holding the key (32+ bytes) session cookies are sealed with; empty: a random key per process"`
	// SessionTTL is how long a sign-in lasts (the token's own expiry and
	// revocation end it sooner).
	SessionTTL time.Duration `yaml:"sessionTTL" flag:"session-ttl" help:"how long a sign-in lasts"`
	// PollInterval is how often a watched experiment's live figures are
	// read from ClickHouse — once per experiment, whatever the viewers.
	PollInterval time.Duration `yaml:"pollInterval" flag:"poll-interval" help:"how often a watched experiment's live figures are read from ClickHouse (one read per experiment, shared by its viewers)"`
	// PageSize is the experiments per list page.
	PageSize int `yaml:"pageSize" flag:"page-size" help:"experiments per page of the list"`
}

// Default returns the default configuration.
func Default() Config {
	return Config{Addr: "127.0.0.1:8080", SchedulerURL: "http://127.0.0.1:9464", AnalyzerURL: "http://127.0.0.1:9464", SessionTTL: 12 * time.Hour,
		PollInterval: 2 * time.Second, PageSize: 50}
}

// Validate reports every problem, each with its field.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("console.addr: empty, expected host:port"))
	}
	if u, err := url.Parse(c.SchedulerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("console.schedulerURL: got %q, expected http(s)://host:port", c.SchedulerURL))
	}
	if u, err := url.Parse(c.AnalyzerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("console.analyzerURL: got %q, expected http(s)://host:port", c.AnalyzerURL))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, fmt.Errorf("console.tlsCertFile, console.tlsKeyFile: got %q and %q, expected both or neither", c.TLSCertFile, c.TLSKeyFile))
	}
	if c.SessionTTL < time.Minute {
		errs = append(errs, fmt.Errorf("console.sessionTTL: got %s, expected at least 1m", c.SessionTTL))
	}
	if c.PollInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("console.pollInterval: got %s, expected at least 100ms", c.PollInterval))
	}
	if c.PageSize < 1 || c.PageSize > 1000 {
		errs = append(errs, fmt.Errorf("console.pageSize: got %d, expected 1 to 1000", c.PageSize))
	}
	return errors.Join(errs...)
}
