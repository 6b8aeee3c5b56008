package spec

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrTooManyRuns guards against accidental huge sweeps.
var ErrTooManyRuns = errors.New("sweep too large")

// Prepared is a validated spec ready to submit.
type Prepared struct {
	Experiment *Experiment
	Resolved   string // the spec with defaults and overrides applied, as YAML
	Runs       int
}

// Prepare parses and validates a spec with --set overrides and returns the
// resolved document to submit (itself at most MaxBytes). Nothing is queued when it fails; sweeps over
// MaxRunsWithoutConfirm runs need yes.
func Prepare(data []byte, sets []string, yes bool) (Prepared, error) {
	e, err := Parse(data, sets)
	if err != nil {
		return Prepared{}, err
	}
	n, err := e.Count()
	if err != nil {
		return Prepared{}, err
	}
	if n > MaxRunsWithoutConfirm && !yes {
		return Prepared{Runs: n}, fmt.Errorf("%w: the spec expands to %d runs (more than %d); pass --yes (API: yes=true) to submit it anyway",
			ErrTooManyRuns, n, MaxRunsWithoutConfirm)
	}
	resolved, err := yaml.Marshal(e)
	if err != nil {
		return Prepared{}, fmt.Errorf("encode resolved spec: %w", err)
	}
	if len(resolved) > MaxBytes {
		// The resolved spec is what the scheduler parses from
		// experiment.submit: refused here rather than after an id was given.
		return Prepared{}, &TooLargeError{What: "the resolved spec (defaults and --set applied)", Size: len(resolved)}
	}
	return Prepared{Experiment: e, Resolved: string(resolved), Runs: n}, nil
}

// NewExperimentID names an experiment: its name, UTC time and a random suffix.
func NewExperimentID(name string, now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", name, now.UTC().Format("20060102-150405"), hex.EncodeToString(b[:]))
}
