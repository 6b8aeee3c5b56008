package scheduler

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/spec"
)

// Problem is one problem of a spec, taken apart for an editor: the line it
// was written on (0: not on a line — an override, or the whole spec), the
// --set override that caused it, the field path and the words.
type Problem struct {
	Line    int    `json:"line,omitempty"`
	Set     string `json:"set,omitempty"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
	// Text is the problem as the CLI prints it.
	Text string `json:"text"`
}

// ValidateReply answers a dry run: whether the spec would be accepted,
// every problem, and what it would run.
type ValidateReply struct {
	Valid    bool      `json:"valid"`
	Error    string    `json:"error,omitempty"`
	Problems []Problem `json:"problems"`
	// Runs is how many runs the sweep expands to; Trigger names the
	// template a submission would arm instead.
	Runs    int    `json:"runs,omitempty"`
	Trigger string `json:"trigger,omitempty"`
	// RunSeconds is one run's timed phases; EstimatedSeconds all runs' one
	// after another (at concurrency 1: provisioning, analysis and teardown
	// come on top, so it is a lower bound). A capacity search's probes are
	// not known in advance: its figure is its first probe's.
	RunSeconds       float64 `json:"run_seconds,omitempty"`
	EstimatedSeconds float64 `json:"estimated_seconds,omitempty"`
}

// problemRE takes a problem apart: "line 7: spec.x: msg" or
// "--set spec.x=v: spec.x: msg".
var problemRE = regexp.MustCompile(`^(?:line (\d+): |(--set \S+?): )?([A-Za-z][\w.\[\]]*): (.*)$`)

func splitProblem(text string) Problem {
	p := Problem{Message: text, Text: text}
	if m := problemRE.FindStringSubmatch(text); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Set, p.Path, p.Message = strings.TrimPrefix(m[2], "--set "), m[3], m[4]
	}
	return p
}

// Validate checks a spec with overrides as a submission would and queues
// nothing.
func (s *Scheduler) Validate(req SubmitRequest) ValidateReply {
	out := ValidateReply{Problems: []Problem{}}
	p, err := spec.Prepare([]byte(req.Spec), req.Set, req.Yes)
	if err != nil {
		var probs spec.Problems
		if errors.As(err, &probs) {
			for _, x := range probs {
				out.Problems = append(out.Problems, splitProblem(x))
			}
			out.Error = "invalid spec"
			return out
		}
		out.Error = err.Error()
		return out
	}
	out.Valid, out.Runs = true, p.Runs
	if t := p.Experiment.Spec.Trigger; t != nil {
		out.Trigger = p.Experiment.Metadata.Name
	}
	ph := p.Experiment.Spec.Phases
	out.RunSeconds = (ph.Baseline.Duration + ph.Warmup.Duration + ph.Measure.Duration + ph.Cooldown.Duration).Seconds()
	out.EstimatedSeconds = out.RunSeconds * float64(p.Runs)
	return out
}

// TriggerStatus is an armed template as the API lists it.
type TriggerStatus struct {
	Name        string            `json:"name"`
	Subject     string            `json:"subject,omitempty"`
	Cron        string            `json:"cron,omitempty"`
	Bind        map[string]string `json:"bind,omitempty"`
	Fired       int               `json:"fired"`
	LastFiredMs int64             `json:"last_fired_ms,omitempty"`
	NextFireMs  int64             `json:"next_fire_ms,omitempty"`
	CreatedMs   int64             `json:"created_ms"`
}

// Triggers lists the armed templates by name.
func (s *Scheduler) Triggers() []TriggerStatus {
	ts := s.view.triggerList()
	slices.SortFunc(ts, func(a, b TriggerRecord) int { return strings.Compare(a.Name, b.Name) })
	out := make([]TriggerStatus, 0, len(ts))
	for _, t := range ts {
		out = append(out, TriggerStatus{Name: t.Name, Subject: t.Subject, Cron: t.Cron, Bind: t.Bind, Fired: t.Fired,
			LastFiredMs: t.LastFiredMs, NextFireMs: t.NextFireMs, CreatedMs: t.CreatedMs})
	}
	return out
}

// errUnknownTrigger: no template of that name is armed.
var errUnknownTrigger = errors.New("no armed trigger")

// Disarm removes an armed template: it fires no more (an event already on
// its subject is dead-lettered with "no armed trigger matches"), and the
// experiments it started are not touched. Submitting the template again
// arms it again.
func (s *Scheduler) Disarm(ctx context.Context, name string) error {
	if err := s.Check(); err != nil {
		return err
	}
	if !possibleID(name) {
		return fmt.Errorf("%w named %q", errUnknownTrigger, name)
	}
	key := triggerKey(name)
	if _, err := s.kv.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w named %q", errUnknownTrigger, name)
	} else if err != nil {
		return fmt.Errorf("read trigger %s: %w", name, err)
	}
	if err := s.kv.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("disarm trigger %s: %w", name, err)
	}
	s.view.remove(key)
	s.logger.Info("trigger disarmed", zap.String("trigger", name))
	return nil
}
