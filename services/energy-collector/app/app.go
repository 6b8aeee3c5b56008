// Package app wires the energy collector for its own binary and for `greenflow dev`.
package app

import (
	"errors"
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// Config is the collector's configuration.
type Config = collector.Config

// Default returns the defaults.
func Default() Config { return collector.Default() }

// RegisterFlags adds the collector's flags.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Instance, "instance", c.Instance, "instance name (default: hostname)")
	fs.StringVar(&c.Node, "node", c.Node, "node this collector measures (default: hostname)")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "sampling interval")
	fs.StringVar(&c.Source, "source", c.Source, "meter: auto (RAPL when readable, else model), rapl or model")
	fs.StringVar(&c.PowercapRoot, "powercap-root", c.PowercapRoot, "powercap sysfs root")
	fs.StringVar(&c.ProcRoot, "proc-root", c.ProcRoot, "procfs root")
	fs.Float64Var(&c.IdleWatts, "idle-watts", c.IdleWatts, "model: node power at 0% CPU (estimated figures)")
	fs.Float64Var(&c.MaxWatts, "max-watts", c.MaxWatts, "model: node power at 100% CPU (estimated figures)")
}

// New builds the collector component.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	if d.Store == nil {
		return nil, errors.New("energy collector needs ClickHouse")
	}
	return collector.New(c, d.Bus, d.Store, d.Logger, d.Registry)
}
