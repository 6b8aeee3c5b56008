// Package app is the reference UC-3 processor's command line, shared by its
// own binary and by "greenflow uc3-processor" (how the local provisioner
// starts it in dev mode). It starts like every GreenFlow binary
// (pkg/svcmain), as a standalone one: a system under test talks to Kafka
// only, never to NATS or ClickHouse.
package app

import (
	"flag"
	"os"
	"strings"
	_ "time/tzdata" // time zones even in images without /usr/share/zoneinfo

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/processor"
)

// Service declares the processor: no NATS, no store; many processors may
// run on one machine, so the metrics port is picked free unless given.
var Service = svcmain.Service[processor.Config]{
	Name:    "uc3-processor",
	Needs:   svcmain.Needs{Standalone: true, MetricsAddr: "127.0.0.1:0"},
	Default: processor.Default,
	Flags:   registerFlags,
	New: func(c processor.Config, d svcmain.Deps) (service.Component, error) {
		return processor.New(c, processor.Deps{Logger: d.Logger, Registry: d.Registry})
	},
}

// Main runs the processor until SIGINT or SIGTERM.
func Main(args []string) error {
	ctx, stop := service.SignalContext()
	defer stop()
	return Service.Command(ctx, args, os.Stderr)
}

// registerFlags adds the flags Config's tags cannot declare: a list,
// and a format whose help names its value with backquotes.
func registerFlags(fs *flag.FlagSet, cfg *processor.Config) {
	fs.Var(brokersFlag{&cfg.Brokers}, "brokers", "Kafka seed brokers, comma-separated `host:port`")
	fs.Var(formatFlag{&cfg.Format}, "format", "input value `format`: avro (Confluent wire format) or json")
}

// brokersFlag is a comma-separated broker list.
type brokersFlag struct{ list *[]string }

func (f brokersFlag) String() string {
	if f.list == nil {
		return ""
	}
	return strings.Join(*f.list, ",")
}

func (f brokersFlag) Set(s string) error {
	*f.list = svcmain.SplitList(s)
	return nil
}

// formatFlag is the input format. An unknown one is kept as given: the
// configuration's Validate reports it alongside any other problem.
type formatFlag struct{ format *uc3.Format }

func (f formatFlag) String() string {
	if f.format == nil {
		return ""
	}
	return string(*f.format)
}

func (f formatFlag) Set(s string) error {
	*f.format = uc3.Format(s)
	if parsed, err := uc3.ParseFormat(s); err == nil {
		*f.format = parsed
	}
	return nil
}
