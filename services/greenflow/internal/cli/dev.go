// greenflow dev and greenflow demo: the dev stack (every service) in this
// process; the demo runs one experiment on it, end to end.

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir(), "JetStream store and ClickHouse data (kept across restarts)")
	ephemeral := fs.Bool("ephemeral", false, "delete the state dir on exit")
	chDSN := fs.String("clickhouse-dsn", "", "use this ClickHouse instead of starting clickhouse-server")
	natsPort := fs.Int("nats-port", 4222, "NATS port on 127.0.0.1 (-1: any free port)")
	kafkaPort := fs.Int("kafka-port", 9092, "in-process Kafka port on 127.0.0.1 (0: any free port)")
	httpAddr := fs.String("http-addr", "127.0.0.1:9464", "address of /metrics, /healthz and the HTTP APIs (empty disables)")
	consoleAddr := fs.String("console-addr", "127.0.0.1:8080", "address of the web console (empty disables)")
	logLevel := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := cliLogger(*logLevel)
	st, err := devstack.Start(ctx, devstack.Options{StateDir: *stateDir, Ephemeral: *ephemeral, ClickHouseDSN: *chDSN, NATSPort: *natsPort,
		KafkaPort: *kafkaPort, HTTPAddr: *httpAddr, ConsoleAddr: *consoleAddr, UC3Command: selfUC3Command(), Logger: logger})
	if err != nil {
		return err
	}
	defer st.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx); stop() }()
	// The banner names the address the server bound (a ":0" port is known
	// only once it listens), so it waits for the listener.
	addr := *httpAddr
	if addr != "" {
		u, err := st.APIURL(runCtx)
		if err != nil {
			// Run ended first: its error says why (none on Ctrl-C).
			if runErr := <-done; runErr != nil || ctx.Err() != nil {
				return runErr
			}
			return err
		}
		addr = strings.TrimPrefix(u, "http://")
	}
	fmt.Fprintf(stdout, "greenflow dev is running (Ctrl-C stops it)\n  NATS:       %s\n  Kafka:      %s\n  ClickHouse: %s\n  API:        http://%s/v1/experiments\n  metrics:    http://%s/metrics\n  state:      %s\n  admin token: %s (mode 0600; the CLI reads it)\n",
		st.Endpoints.NATSURL, strings.Join(st.Endpoints.KafkaBrokers, ","), store.RedactDSN(st.Endpoints.ClickHouseDSN), addr, addr, *stateDir,
		filepath.Join(*stateDir, devstack.TokenFile))
	if *consoleAddr != "" && *httpAddr != "" {
		// Printed once it listens: its port may have been chosen then.
		wctx, cancel := context.WithTimeout(runCtx, time.Minute)
		u, err := st.ConsoleURL(wctx)
		cancel()
		if err == nil {
			fmt.Fprintf(stdout, "  console:    %s (sign in with the admin token)\n", u)
		}
	}
	return <-done
}

func cliLogger(level string) *zap.Logger {
	l, err := service.NewLogger(level, true)
	if err != nil {
		return zap.NewNop()
	}
	return l
}

func selfUC3Command() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	return []string{exe, "uc3-processor"}
}

// runDemo starts the dev stack in this process, runs one experiment end to
// end with live progress, prints the results table, writes CSV and JSON
// beside the state, and stops everything.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf specFlags
	sf.register(fs, "examples/uc3-local.yaml")
	stateDir := fs.String("state-dir", ".state/demo", "state dir (kept: 'greenflow results --state-dir' reads it later)")
	chDSN := fs.String("clickhouse-dsn", "", "use this ClickHouse instead of starting clickhouse-server")
	logLevel := fs.String("log-level", "warn", "service log level")
	consoleAddr := fs.String("console-addr", "127.0.0.1:0", "address of the web console while the demo runs (empty disables)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := sf.prepare(false)
	if err != nil {
		return err
	}
	began := time.Now()
	fmt.Fprintf(stdout, "starting the dev stack (embedded NATS JetStream, in-process Kafka, ClickHouse) in %s\n", *stateDir)
	// The demo submits through the HTTP API with the stack's admin token,
	// as the CLI does against 'greenflow dev'; any free port.
	st, err := devstack.Start(ctx, devstack.Options{StateDir: *stateDir, ClickHouseDSN: *chDSN, NATSPort: -1, UC3Command: selfUC3Command(),
		HTTPAddr: "127.0.0.1:0", ConsoleAddr: *consoleAddr, Logger: cliLogger(*logLevel)})
	if err != nil {
		return err
	}
	defer st.Close()
	runCtx, stopStack := context.WithCancel(ctx)
	stackDone := make(chan error, 1)
	go func() { stackDone <- st.Run(runCtx) }()
	defer func() {
		stopStack()
		<-stackDone
	}()
	base, err := st.APIURL(ctx)
	if err != nil {
		return err
	}
	if *consoleAddr != "" {
		if u, err := st.ConsoleURL(ctx); err == nil {
			fmt.Fprintf(stdout, "web console: %s (sign in with the token in %s; 'greenflow dev --state-dir %s' serves it after the demo)\n",
				u, filepath.Join(*stateDir, devstack.TokenFile), *stateDir)
		}
	}
	api := &apiClient{base: base, token: st.AdminToken(), tokenFrom: filepath.Join(*stateDir, devstack.TokenFile),
		tokenFile: filepath.Join(*stateDir, devstack.TokenFile), hc: &http.Client{}}
	// As any client of a just-started stack: submit once /healthz says
	// every service is ready (the scheduler answers 503 until its state
	// is loaded).
	if err := waitHealthy(ctx, api, 2*time.Minute); err != nil {
		return err
	}
	creds := devstack.NATSCreds(st.StateDir(), string(events.ServiceCLI))
	natsOpts, err := creds.Options()
	if err != nil {
		return err
	}
	dsn := devDSN(st.Endpoints, false)
	w := &watchTarget{natsURL: st.Endpoints.NATSURL, natsOpts: natsOpts, trustFile: trustFileOf(creds), unverifiedWait: time.Minute,
		dsn: func() string { return dsn }}
	id, werr := submitAndWatch(ctx, api, p, w, stdout, stderr, func(id string) string {
		return fmt.Sprintf("submitted experiment %s: %s of %s", id, nRuns(p.Runs), sf.file)
	})
	if id == "" || werr != nil && !errors.Is(werr, context.Canceled) {
		return werr
	}
	rows, err := LoadResults(ctx, st.Store, id)
	if err == nil {
		for _, f := range []string{"csv", "json"} {
			path := filepath.Join(*stateDir, "results-"+id+"."+f)
			if out, err := os.Create(path); err == nil {
				_ = WriteResults(out, f, rows)
				_ = out.Close()
				fmt.Fprintf(stdout, "wrote %s\n", path)
			}
		}
	}
	fmt.Fprintf(stdout, "demo finished in %s; stopping the stack\n", time.Since(began).Round(100*time.Millisecond))
	return werr
}

func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "greenflow")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "greenflow")
	}
	return ".greenflow"
}

// waitHealthy polls the API's /healthz until it answers 200, at most
// within; the error carries its last answer.
func waitHealthy(ctx context.Context, api *apiClient, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.base+"/healthz", nil)
		if err != nil {
			return err
		}
		if resp, err := api.hc.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(body))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for the dev stack to be ready (%s): %w", last, ctx.Err())
		}
	}
}
