// Package app wires the scheduler for its own binary and for `greenflow dev`.
package app

import (
	"errors"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/version"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// Config names scheduler.Config outside the service (its internal package
// is not importable there): `greenflow dev` and tests configure it.
type Config = scheduler.Config

// Service declares the scheduler for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:    "scheduler",
	Needs:   svcmain.Needs{Store: true},
	Default: scheduler.Default,
	New:     New,
}

var _ svcmain.HTTPAPI = (*scheduler.Scheduler)(nil)

// New builds the scheduler component; the runs' Kafka brokers default to
// the common --kafka-brokers, and its API is served as svcmain.HTTPAPI. It
// needs ClickHouse (experiments and runs are stored there).
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
	return s, nil
}
