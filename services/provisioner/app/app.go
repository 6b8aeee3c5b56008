// Package app wires the provisioner for its own binary and for `greenflow dev`.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/provisioner/internal/kube"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Config gathers the configurations of the provisioner's core and of its
// two backends, which live in packages of their own.
type Config struct {
	Core  provisioner.Config
	Local local.Config
	Kube  kube.Config
	// Kubernetes enables the kubernetes backend: auto (when a kubeconfig or
	// in-cluster config is found), on (fail to start without one) or off.
	Kubernetes string `flag:"kubernetes" help:"kubernetes backend: auto (when a cluster is configured), on or off"`
}

// Default returns the defaults: the UC-3 processor binary next to this one,
// and the kubernetes backend when a cluster is configured.
func Default() Config {
	exe, _ := os.Executable()
	c := Config{Core: provisioner.Default(), Local: local.Default(), Kube: kube.Default(), Kubernetes: "auto"}
	c.Local.UC3Command = []string{filepath.Join(filepath.Dir(exe), "uc3-processor")}
	return c
}

// Service declares the provisioner for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:    "provisioner",
	Default: Default,
	Flags:   registerFlags,
	New:     func(c Config, d svcmain.Deps) (service.Component, error) { return New(c, d) },
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	switch c.Kubernetes {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("kubernetes: got %q, expected auto, on or off", c.Kubernetes))
	}
	return errors.Join(append(errs, c.Core.Validate(), c.Local.Validate(), c.Kube.Validate())...)
}

// registerFlags adds the flag Config's tags cannot declare: a command
// line to split.
func registerFlags(fs *flag.FlagSet, c *Config) {
	fs.Func("uc3-command", "command line of the reference UC-3 processor (space-separated; default: uc3-processor next to this binary)", func(s string) error {
		c.Local.UC3Command = strings.Fields(s)
		return nil
	})
}

// unavailable stands in for a kubernetes backend that could not be
// configured, so that runs asking for it fail with the reason.
type unavailable struct{ err error }

func (u unavailable) Key(runID string) string      { return state.KubeKey(runID) }
func (u unavailable) Owns(state.Record) bool       { return false }
func (u unavailable) TeardownBound() time.Duration { return 0 }

func (u unavailable) Provision(context.Context, events.RunProvision) ([]events.Target, error) {
	return nil, u.err
}

// Remove cannot reach the cluster; a provisioner that can does it.
func (u unavailable) Remove(context.Context, string, *state.Entry) (bool, string, error) {
	return false, "", u.err
}

// New builds the provisioner with the local backend and, when configured,
// the kubernetes backend; it reads the kubeconfig, nothing else.
func New(c Config, d svcmain.Deps) (*provisioner.Provisioner, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	store, err := state.New(state.Default(), state.Deps{Bus: d.Bus})
	if err != nil {
		return nil, err
	}
	c.Local.KafkaSASLFile = d.KafkaSASLFile
	lb, err := local.New(c.Local, local.Deps{Store: store, Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	backends := map[string]provisioner.Backend{"local": lb}
	if c.Kubernetes != "off" {
		kb, err := newKube(c.Kube, d.Logger)
		switch {
		case err == nil:
			backends["kubernetes"] = kb
		case c.Kubernetes == "on":
			return nil, err
		default:
			d.Logger.Info("kubernetes backend disabled", zap.String("component", "provisioner"), zap.Error(err))
			backends["kubernetes"] = unavailable{err: err}
		}
	}
	return provisioner.New(c.Core, provisioner.Deps{Bus: d.Bus, Store: store, Backends: backends, Logger: d.Logger, Registry: d.Registry, Kafka: d.Kafka})
}

func newKube(c kube.Config, logger *zap.Logger) (*kube.Backend, error) {
	rc, err := kube.RESTConfig(c.Kubeconfig, c.Context)
	if err != nil {
		return nil, err
	}
	return kube.New(c, kube.Deps{REST: rc, Logger: logger})
}
