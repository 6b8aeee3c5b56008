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
