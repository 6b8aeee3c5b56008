// Package app wires the analyzer for its own binary and for `greenflow dev`.
package app

import (
	"errors"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// New builds the analyzer component.
func New(d svcmain.Deps) (service.Component, error) {
	if d.Store == nil {
		return nil, errors.New("analyzer needs ClickHouse")
	}
	return analyzer.New(d.Bus, d.Store, d.Logger, d.Registry)
}
