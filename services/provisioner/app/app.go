// Package app wires the provisioner for its own binary and for `greenflow dev`.
package app

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
)

// Config is the provisioner's configuration.
type Config struct {
	Local local.Config
}

// Default returns the defaults: the UC-3 processor binary next to this one.
func Default() Config {
	exe, _ := os.Executable()
	return Config{Local: local.Config{UC3Command: []string{filepath.Join(filepath.Dir(exe), "uc3-processor")}}}
}

// RegisterFlags adds the provisioner's flags.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.Func("uc3-command", "command line of the reference UC-3 processor (space-separated; default: uc3-processor next to this binary)", func(s string) error {
		c.Local.UC3Command = strings.Fields(s)
		return nil
	})
	fs.StringVar(&c.Local.Node, "node", c.Local.Node, "node name of this machine in targets (default: hostname)")
}

type component struct {
	p     *provisioner.Provisioner
	local *local.Backend
}

func (c component) Run(ctx context.Context) error {
	defer c.local.Close()
	return c.p.Run(ctx)
}

// New builds the provisioner component with the local backend.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	var p *provisioner.Provisioner
	lb := local.New(c.Local, d.Logger, func(exp, run, reason string) {
		p.Crashed(context.Background(), exp, run, reason)
	})
	p, err := provisioner.New(d.Bus, map[string]provisioner.Backend{"local": lb}, d.Logger, d.Registry)
	if err != nil {
		return nil, err
	}
	return component{p: p, local: lb}, nil
}
