package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/natsembed"
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
