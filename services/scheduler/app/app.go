// Package app wires the scheduler for its own binary and for `greenflow dev`.
package app

import (
	"errors"
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/version"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// Config is the scheduler's configuration.
type Config = scheduler.Config

// Service declares the scheduler for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:    "scheduler",
	Needs:   svcmain.Needs{Store: true},
	Default: scheduler.Default,
	Flags:   RegisterFlags,
	New:     New,
}

// RegisterFlags adds the scheduler's flags.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "runs active at once on the target cluster")
	fs.DurationVar(&c.ProvisionTimeout, "provision-timeout", c.ProvisionTimeout, "time a run may wait for provisioning")
	fs.DurationVar(&c.AnalyzeTimeout, "analyze-timeout", c.AnalyzeTimeout, "time a run may wait for analysis")
	fs.IntVar(&c.Retries, "retries", c.Retries, "times a run failing for a transient reason is run again")
	fs.DurationVar(&c.RetryBackoff, "retry-backoff", c.RetryBackoff,
		"wait before the first retry of a run; each further retry waits twice as long (0: retry at once)")
	fs.DurationVar(&c.RetryBackoffMax, "retry-backoff-max", c.RetryBackoffMax, "longest wait before a retry")
}

// New builds the scheduler component.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	if d.Store == nil {
		return nil, errors.New("scheduler needs ClickHouse")
	}
	if len(c.Brokers) == 0 {
		c.Brokers = d.Brokers
	}
	c.Version, c.Commit = version.Version, version.Commit()
	s, err := scheduler.New(c, scheduler.Deps{Bus: d.Bus, Store: d.Store, Logger: d.Logger, Registry: d.Registry})
	if err != nil {
		return nil, err
	}
	if d.Mux != nil {
		s.RegisterHTTP(d.Mux)
	}
	return s, nil
}
