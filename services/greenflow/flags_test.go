package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	analyzerapp "github.com/greenflow/greenflow/services/analyzer/app"
	consoleapp "github.com/greenflow/greenflow/services/console/app"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	loadgenapp "github.com/greenflow/greenflow/services/load-generator/app"
	provisionerapp "github.com/greenflow/greenflow/services/provisioner/app"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
	uc3app "github.com/greenflow/greenflow/services/uc3-processor/app"
)

var update = flag.Bool("update", false, "rewrite testdata/flags.golden")

// The flags of every service binary — names, defaults and help, as -h
// prints them — are a contract with every deployment and script: they
// change only on purpose. testdata/flags.golden holds them; a change shows
// as a diff here (go test -run TestServiceFlags -update rewrites it, and
// the diff is reviewed with the change). The machine's host name, a
// default of the instance flags, reads HOSTNAME.
func TestServiceFlags(t *testing.T) {
	var out bytes.Buffer
	for _, help := range []struct {
		name string
		run  func(args []string, w *bytes.Buffer) error
	}{
		{"analyzer", func(a []string, w *bytes.Buffer) error { return analyzerapp.Service.Command(t.Context(), a, w) }},
		{"console", func(a []string, w *bytes.Buffer) error { return consoleapp.Service.Command(t.Context(), a, w) }},
		{"energy-collector", func(a []string, w *bytes.Buffer) error { return collectorapp.Service.Command(t.Context(), a, w) }},
		{"load-generator", func(a []string, w *bytes.Buffer) error { return loadgenapp.Service.Command(t.Context(), a, w) }},
		{"provisioner", func(a []string, w *bytes.Buffer) error { return provisionerapp.Service.Command(t.Context(), a, w) }},
		{"scheduler", func(a []string, w *bytes.Buffer) error { return schedulerapp.Service.Command(t.Context(), a, w) }},
		{"uc3-processor", func(a []string, w *bytes.Buffer) error { return uc3app.Service.Command(t.Context(), a, w) }},
	} {
		var w bytes.Buffer
		require.NoError(t, help.run([]string{"-h"}, &w), help.name)
		out.WriteString("## " + help.name + "\n" + w.String())
	}
	got := out.String()
	if host, err := os.Hostname(); err == nil && host != "" {
		got = regexp.MustCompile(`"`+regexp.QuoteMeta(host)+`"`).ReplaceAllString(got, `"HOSTNAME"`)
	}
	path := filepath.Join("testdata", "flags.golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), got)
	require.False(t, strings.Contains(got, "panic"), "no flag's default panicked")
}
