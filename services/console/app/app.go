// Package app wires the console for its own binary and for `greenflow dev`.
package app

import (
	"context"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/console/internal/console"
)

// Config names console.Config outside the service.
type Config = console.Config

// Service declares the console for its binary and for `greenflow dev`. It
// reads ClickHouse as the read-only user (its DSN: --clickhouse-dsn-file).
var Service = svcmain.Service[Config]{
	Name:    "console",
	Needs:   svcmain.Needs{ReadOnlyStore: true},
	Default: console.Default,
	New:     New,
}

// New builds the console component.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	return NewWith(c, d, nil)
}

// NewWith builds the console with a function that finds the API of the
// scheduler and the analyzer (the dev stack serves both on one address,
// known only once it listens); nil: the configured URLs.
func NewWith(c Config, d svcmain.Deps, apiURL func(ctx context.Context) (string, error)) (*console.Console, error) {
	return console.New(c, console.Deps{Bus: d.Bus, Store: d.Store, Logger: d.Logger, Registry: d.Registry, SchedulerURL: apiURL, AnalyzerURL: apiURL})
}
