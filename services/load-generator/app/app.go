// Package app wires the load generator for its own binary and for `greenflow dev`.
package app

import (
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// Config names loadgen.Config outside the service (its internal package
// is not importable there): `greenflow dev` and tests configure it.
type Config = loadgen.Config

// Service declares the load generator for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:      "load-generator",
	StoreWhen: func(c Config) bool { return c.RecordKafkaSignals },
	Default:   loadgen.Default,
	New:       New,
}

// New builds the load generator component. d.Store may be nil: the Kafka
// signals are then not recorded.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	var sink kafkasignals.Sink
	if d.Store != nil {
		sink = d.Store
	}
	return loadgen.New(c, loadgen.Deps{Bus: d.Bus, Store: sink, Logger: d.Logger, Registry: d.Registry, Kafka: d.Kafka})
}
