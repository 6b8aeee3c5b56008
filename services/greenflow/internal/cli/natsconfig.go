package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"go.uber.org/zap"
)

// runNATSConfig prints the authorization block of a nats-server
// configuration for a real deployment: every GreenFlow user's nkey and the
// permissions the event contract gives it (the same ones the dev stack's
// embedded server enforces). Seeds are made in --creds-dir (0600) for the
// users that have none and never printed: give each service its own file
// (a Kubernetes Secret) as --nats-nkey-file, and every service the same
// trust file (the users' public keys, written beside the seeds as
// nats-trust.json) as --nats-trust-file: each checks with it who signed
// every message and record it reads.
func runNATSConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nats-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("creds-dir", "", "directory of the users' nkey seeds, <user>.nk (made when missing, mode 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("--creds-dir: a directory for the users' nkey seeds is required")
	}
	users, err := natsembed.EnsureUsers(*dir)
	if err != nil {
		return err
	}
	if _, err = io.WriteString(stdout, natsembed.ServerConfig(users)); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stderr, "trust file for every service (--nats-trust-file): %s\n", filepath.Join(*dir, bus.TrustFileName))
	return err
}

// declareTry bounds one try of nats declare.
const declareTry = 15 * time.Second

// runNATS runs `greenflow nats declare`: as NATS's admin user it declares
// every stream and bucket GreenFlow uses (bus.DeclareTopology) — no
// service may, since a stream's configuration can re-route any subject
// into any other — and prints them. With --keep it stays connected: it
// declares them again after a NATS restart that lost them and keeps the
// trigger stream capturing the subjects of armed triggers, until stopped
// (a cluster's nats-topology Deployment runs it so).
func runNATS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "declare" {
		return fmt.Errorf("nats: expected the subcommand declare, got %q", strings.Join(args, " "))
	}
	fs := flag.NewFlagSet("nats declare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c connFlags
	fs.StringVar(&c.stateDir, "state-dir", defaultStateDir(), "state dir of a running 'greenflow dev' (its NATS and admin seed, when --nats-url or --nats-nkey-file are not given)")
	fs.StringVar(&c.natsURL, "nats-url", "", "NATS URL (default: from the dev state dir)")
	fs.StringVar(&c.natsNKeyFile, "nats-nkey-file", "", "file holding the admin user's NATS nkey seed (default: the dev stack's, in the state dir)")
	caFile := fs.String("nats-ca-file", "", "PEM file of the CA that signed the NATS server's certificate; set to require TLS")
	certFile := fs.String("nats-cert-file", "", "PEM client certificate for NATS servers that verify clients (with --nats-key-file)")
	keyFile := fs.String("nats-key-file", "", "PEM private key of --nats-cert-file")
	keep := fs.Bool("keep", false, "stay connected: declare again after a NATS restart, follow armed triggers, until stopped")
	logLevel := fs.String("log-level", "info", "log level with --keep (debug, info, warn, error)")
	seal := fs.Bool("seal-unsigned", false, "once, when upgrading from a version without signatures: seal as admin the records it left in the buckets (every reader skips unsigned records)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("nats declare: unexpected argument %q", fs.Arg(0))
	}
	if c.natsURL == "" {
		if err := c.resolve(true); err != nil {
			return err
		}
	}
	creds := bus.Credentials{NKeyFile: c.natsNKeyFile, CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile}
	if creds.NKeyFile == "" {
		creds.NKeyFile = devstack.NATSCreds(c.stateDir, bus.UserAdmin).NKeyFile
	}
	if err := creds.Validate(); err != nil {
		return err
	}
	opts, err := creds.Options()
	if err != nil {
		return err
	}
	logger := zap.NewNop()
	if *keep {
		logger = cliLogger(*logLevel)
	}
	b, err := bus.Connect(ctx, c.natsURL, bus.UserAdmin, logger, nil, opts...) // named as its user: see bus.Declares
	if err != nil {
		return err
	}
	defer b.Close()
	if *keep {
		fmt.Fprintln(stderr, "declaring every stream and bucket, and keeping them declared (after a NATS restart too) with the trigger stream following armed triggers; stop with Ctrl-C or SIGTERM")
	}
	// With --keep a failure is not the end: NATS restarting while the
	// declarer starts (a cluster's pods come up in any order) is what it
	// is there for. Each try is bounded, so one stuck on a server that
	// went away cannot hold up the trigger follower below.
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, declareTry)
		err := bus.DeclareTopology(actx, b)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil // stopped: no failure
		}
		if !*keep {
			return err
		}
		logger.Warn("declaring the streams and buckets failed; trying again", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	if *seal {
		sealed, err := bus.SealUnsigned(ctx, b)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "sealed as admin, records written before signatures: %v\n", sealed)
	}
	fmt.Fprintf(stdout, "declared on %s: streams %s, %s, %s, %s; buckets %s\n", c.natsURL,
		bus.StreamLifecycle, bus.StreamDeadLetter, bus.StreamCollectors, bus.StreamWatch, strings.Join(bus.Buckets(), ", "))
	if !*keep {
		return nil
	}
	return bus.FollowTriggers(ctx, b)
}
