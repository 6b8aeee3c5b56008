// Package app wires the analyzer for its own binary and for `greenflow dev`.
package app

import (
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// Config names analyzer.Config outside the service (its internal package
// is not importable there): `greenflow dev` and tests configure it.
type Config = analyzer.Config

// Service declares the analyzer for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:    "analyzer",
	Needs:   svcmain.Needs{Store: true},
	Default: analyzer.Default,
	New:     New,
}

var _ svcmain.HTTPAPI = (*analyzer.Analyzer)(nil)

// New builds the analyzer component; its results API
// (GET /v1/experiments/{id}/results) is served as svcmain.HTTPAPI.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	a, err := analyzer.New(c, analyzer.Deps{Bus: d.Bus, Store: d.Store, Logger: d.Logger, Registry: d.Registry})
	if err != nil {
		return nil, err
	}
	return a, nil
}
