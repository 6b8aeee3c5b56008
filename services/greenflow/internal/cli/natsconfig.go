package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/greenflow/greenflow/pkg/natsembed"
)

// runNATSConfig prints the authorization block of a nats-server
// configuration for a real deployment: every GreenFlow user's nkey and the
// permissions the event contract gives it (the same ones the dev stack's
// embedded server enforces). Seeds are made in --creds-dir (0600) for the
// users that have none and never printed: give each service its own file
// (a Kubernetes Secret) as --nats-nkey-file.
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
	_, err = io.WriteString(stdout, natsembed.ServerConfig(users))
	return err
}
