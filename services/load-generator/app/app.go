// Package app wires the load generator for its own binary and for `greenflow dev`.
package app

import (
	"flag"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// Config is the load generator's configuration.
type Config = loadgen.Config

// Service declares the load generator for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:      "load-generator",
	StoreWhen: func(c Config) bool { return c.RecordKafkaSignals },
	Default:   loadgen.Default,
	Flags:     RegisterFlags,
	New:       New,
}

// RegisterFlags adds the load generator's flags.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Instance, "instance", c.Instance, "instance name in events and membership; unique per NATS server (default: hostname)")
	fs.StringVar(&c.SchemaRegistryURL, "schema-registry-url", c.SchemaRegistryURL,
		"Confluent-compatible schema registry to register the Avro schema in at each load start (default: use the load command's schema id)")
	fs.StringVar(&c.SchemaSubject, "schema-subject", c.SchemaSubject, "schema registry subject")
	fs.Float64Var(&c.MaxCatchUp, "max-catch-up", c.MaxCatchUp, "after a stall, send at most this multiple of the rate until back on schedule (> 1)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", c.Heartbeat, "membership heartbeat interval (at most half of --member-ttl)")
	fs.DurationVar(&c.MemberTTL, "member-ttl", c.MemberTTL,
		"an instance whose last heartbeat is this old (by the NATS server's clock) is dead and its key ranges are taken over")
	fs.DurationVar(&c.CheckpointInterval, "checkpoint-interval", c.CheckpointInterval,
		"how often an instance checkpoints its progress (acked watermarks, counts) in KV; bounds what is produced twice after a death")
	fs.DurationVar(&c.MaxBackfill, "max-backfill", c.MaxBackfill,
		"records due longer ago than this when a range is resumed or taken over are not back-filled but counted as missed")
	fs.DurationVar(&c.DeliveryTimeout, "delivery-timeout", c.DeliveryTimeout, "fail a load when Kafka acknowledges nothing for this long while records are outstanding (a broker outage)")
	fs.DurationVar(&c.PrepareTimeout, "prepare-timeout", c.PrepareTimeout,
		"fail a load whose instances have not prepared it (key table, producer, topic metadata) within this long of its acceptance")
	fs.BoolVar(&c.RecordKafkaSignals, "record-kafka-signals", c.RecordKafkaSignals,
		"sample topic high-water marks and consumer lag into ClickHouse run metrics (needs --clickhouse-dsn)")
	fs.DurationVar(&c.SignalInterval, "signal-interval", c.SignalInterval, "Kafka signal sampling interval")
}

// New builds the load generator component. d.Store may be nil: the Kafka
// signals are then not recorded.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	var sink kafkasignals.Sink
	if d.Store != nil {
		sink = d.Store
	}
	return loadgen.New(c, loadgen.Deps{Bus: d.Bus, Store: sink, Logger: d.Logger, Registry: d.Registry})
}
