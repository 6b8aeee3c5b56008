// Package app wires the energy collector for its own binary and for `greenflow dev`.
package app

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// Config names collector.Config outside the service (its internal package
// is not importable there): `greenflow dev` and tests configure it.
type Config = collector.Config

// SourceConfig names collector.SourceConfig, one entry of Config.Sources,
// outside the service.
type SourceConfig = collector.SourceConfig

// ParseSources reads a --sources-file (collector.ParseSources): what
// `greenflow testbed up` writes is checked with it.
func ParseSources(b []byte) ([]SourceConfig, error) { return collector.ParseSources(b) }

// Service declares the energy collector for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:    "energy-collector",
	Needs:   svcmain.Needs{Store: true},
	Default: collector.Default,
	Flags:   registerFlags,
	New:     New,
}

// registerFlags adds the flags Config's tags cannot declare: a file to
// read, and a spool directory whose default depends on the instance.
func registerFlags(fs *flag.FlagSet, c *Config) {
	fs.Func("sources-file", "YAML list of sources (kind: auto|rapl|model|kepler|scaphandre|promql|kwollect, node, url, …) replacing the local meter; a file that does not exist leaves the local meter (--source), logged", func(path string) error {
		c.SourcesFile = path
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			c.Sources, c.SourcesAbsent = nil, true
			return nil
		}
		if err != nil {
			return fmt.Errorf("read sources file: %w", err)
		}
		list, err := ParseSources(b)
		if err != nil {
			return fmt.Errorf("parse sources file %s: %w", path, err)
		}
		c.Sources, c.SourcesAbsent = list, false
		return nil
	})
	c.SpoolDir = spoolAuto
	fs.StringVar(&c.SpoolDir, "spool-dir", c.SpoolDir, "keep samples ClickHouse did not take, and the checkpoints of local sources, in this directory (survives restarts, so a restarted collector loses no interval); "+spoolAuto+": ~/.local/state/greenflow/energy-collector/<instance>; empty: in memory, and local sources restart from a baseline")
}

// spoolAuto makes the standalone collector keep its spool in a directory
// of its own instance under the user's state directory, so that a restarted
// collector continues exactly (a local meter from its checkpoint) without
// anyone having to ask for it.
const spoolAuto = "auto"

// DefaultSpoolDir is where an instance keeps its spool unless told otherwise.
func DefaultSpoolDir(instance string) string {
	instance = strings.Map(func(r rune) rune {
		if r == '/' || r == filepath.Separator || r < ' ' {
			return '_'
		}
		return r
	}, instance)
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "greenflow-energy-collector", instance)
	}
	return filepath.Join(home, ".local", "state", "greenflow", "energy-collector", instance)
}

// New builds the collector component; it needs ClickHouse (samples go
// there), and a spool directory left "auto" becomes the instance's own.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	if d.Store == nil {
		return nil, errors.New("energy collector needs ClickHouse")
	}
	if c.SpoolDir == spoolAuto {
		c.SpoolDir = DefaultSpoolDir(c.Instance)
	}
	return collector.New(c, collector.Deps{Bus: d.Bus, Store: d.Store, Logger: d.Logger, Registry: d.Registry})
}
