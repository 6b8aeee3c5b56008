// Package app wires the load generator for its own binary and for `greenflow dev`.
package app

import (
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// Config is the load generator's configuration.
type Config = loadgen.Config

// Default returns the defaults.
func Default() Config { return loadgen.Default() }

// RegisterFlags adds the load generator's flags.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Instance, "instance", c.Instance, "instance name in events (default: hostname)")
}

// New builds the load generator component.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	return loadgen.New(c, d.Bus, d.Logger, d.Registry)
}
