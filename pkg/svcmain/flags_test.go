package svcmain_test

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
)

type level string

func (l *level) String() string     { return string(*l) }
func (l *level) Set(s string) error { *l = level(strings.ToUpper(s)); return nil }

type inner struct {
	Prefix string `yaml:"prefix" flag:"inner-prefix" help:"a nested field's flag"`
}

type boundConfig struct {
	Name     string        `yaml:"name" flag:"name" help:"a string"`
	On       bool          `flag:"on" help:"a bool"`
	Count    int           `flag:"count" help:"an int"`
	Bytes    int64         `flag:"bytes" help:"an int64"`
	Ratio    float64       `flag:"ratio" help:"a float64"`
	Every    time.Duration `flag:"every" help:"a duration"`
	Level    level         `flag:"level" help:"a flag.Value"`
	Untagged int           // no flag
	Inner    inner
}

// Every tagged field, nested ones too, gets a flag with its help and the
// field's current value as default; parsing sets the fields; an untagged
// field gets none.
func TestBindFlagsDeclaresEveryTaggedField(t *testing.T) {
	c := boundConfig{Name: "n", Count: 3, Bytes: 1 << 40, Ratio: 0.5, Every: time.Second, Level: "INFO", Untagged: 7, Inner: inner{Prefix: "gf-"}}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	require.NoError(t, svcmain.BindFlags(fs, &c))
	defaults := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { defaults[f.Name] = f.DefValue + " | " + f.Usage })
	require.Equal(t, map[string]string{
		"name": "n | a string", "on": "false | a bool", "count": "3 | an int", "bytes": "1099511627776 | an int64", "ratio": "0.5 | a float64",
		"every": "1s | a duration", "level": "INFO | a flag.Value", "inner-prefix": "gf- | a nested field's flag",
	}, defaults)
	require.NoError(t, fs.Parse([]string{"-name", "m", "-on", "-count", "4", "-bytes", "5", "-ratio", "0.25", "-every", "2m", "-level", "debug", "-inner-prefix", "x-"}))
	require.Equal(t, boundConfig{Name: "m", On: true, Count: 4, Bytes: 5, Ratio: 0.25, Every: 2 * time.Minute, Level: "DEBUG", Untagged: 7, Inner: inner{Prefix: "x-"}}, c)
}

// A tag the binder cannot honour is an error naming the field and what was
// expected, reported for every such field at once.
func TestBindFlagsRejectsWhatItCannotBind(t *testing.T) {
	var bad struct {
		NoHelp  string         `flag:"no-help"`
		Strange map[string]int `flag:"strange" help:"a map"`
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	err := svcmain.BindFlags(fs, &bad)
	require.ErrorContains(t, err, `field NoHelp: got flag "no-help" help "", expected both`)
	require.ErrorContains(t, err, "field Strange (flag strange): got type map[string]int, expected string, bool, int, int64, float64, time.Duration or a flag.Value")
	require.ErrorContains(t, svcmain.BindFlags(fs, bad), "expected a pointer to a struct")
}

type validated struct {
	Retries int           `yaml:"retries" flag:"retries" help:"retries"`
	Tick    time.Duration `yaml:"tick"` // no flag
}

func (v validated) Validate() error {
	var errs []error
	if v.Retries < 0 {
		errs = append(errs, fmt.Errorf("fake-service.retries: got %d, expected 0 or more", v.Retries))
	}
	if v.Tick <= 0 {
		errs = append(errs, fmt.Errorf("fake.tick: got %s, expected a positive duration", v.Tick))
	}
	return errors.Join(errs...)
}

// A configuration problem with a field a flag sets names the flag too, so
// that whoever passed --retries -1 finds it; one without a flag stays as
// it is, and the original error is still there to unwrap.
func TestAConfigurationProblemNamesItsFlag(t *testing.T) {
	s := svcmain.Service[validated]{Name: "fake", Needs: svcmain.Needs{Standalone: true},
		New: func(c validated, _ svcmain.Deps) (service.Component, error) { return nil, c.Validate() }}
	err := s.Command(t.Context(), []string{"--retries", "-1", "--metrics-addr", ""}, io.Discard)
	require.ErrorContains(t, err, "configure fake: fake-service.retries (--retries): got -1, expected 0 or more\nfake.tick: got 0s, expected a positive duration")
	var joined interface{ Unwrap() []error }
	require.ErrorAs(t, err, &joined, "the original error unwraps")
}
