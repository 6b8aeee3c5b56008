// Package app wires the analyzer for its own binary and for `greenflow dev`.
package app

import (
	"errors"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// Config configures the analyzer.
type Config = analyzer.Config

// Default returns the analyzer defaults.
func Default() Config { return analyzer.Default() }

// New builds the analyzer component with the default configuration.
func New(d svcmain.Deps) (service.Component, error) { return NewWithConfig(Default())(d) }

// NewWithConfig returns a builder of the analyzer with cfg. The results API
// (GET /v1/experiments/{id}/results) is served on d.Mux when there is one.
func NewWithConfig(cfg Config) svcmain.Builder {
	return func(d svcmain.Deps) (service.Component, error) {
		if d.Store == nil {
			return nil, errors.New("analyzer needs ClickHouse")
		}
		a, err := analyzer.New(cfg, d.Bus, d.Store, d.Logger, d.Registry)
		if err != nil {
			return nil, err
		}
		if d.Mux != nil {
			a.RegisterHTTP(d.Mux)
		}
		return a, nil
	}
}
