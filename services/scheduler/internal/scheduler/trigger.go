package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
)

// StreamTriggers captures the subjects of armed subject triggers.
const StreamTriggers = bus.StreamTriggers

// TriggerRecord is an armed experiment template.
type TriggerRecord struct {
	Name       string            `json:"name"`
	Template   string            `json:"template"` // resolved spec without its trigger section
	Subject    string            `json:"subject,omitempty"`
	Bind       map[string]string `json:"bind,omitempty"`
	Cron       string            `json:"cron,omitempty"`
	NextFireMs int64             `json:"next_fire_ms,omitempty"`
	Fired      int               `json:"fired"`
	CreatedMs  int64             `json:"created_ms"`
	// LastFiredMs is when it last started an experiment; LastEventSeq the
	// trigger-stream sequence of the event that did (a redelivered event
	// is not counted twice).
	LastFiredMs  int64  `json:"last_fired_ms,omitempty"`
	LastEventSeq uint64 `json:"last_event_seq,omitempty"`
}

// triggerKey is where trigger name's record is: under bus.TriggerKeyPrefix,
// where the declarer (bus.FollowTriggers) reads the subjects to capture.
func triggerKey(name string) string { return bus.TriggerKeyPrefix + name }

// arm stores (or replaces) a template; subject triggers get their subject
// added to the trigger stream.
func (s *Scheduler) arm(ctx context.Context, e *spec.Experiment) error {
	t := e.Spec.Trigger
	tmpl := *e
	tmpl.Spec.Trigger = nil
	text, err := yaml.Marshal(&tmpl)
	if err != nil {
		return fmt.Errorf("encode template %s: %w", e.Metadata.Name, err)
	}
	rec := TriggerRecord{Name: e.Metadata.Name, Template: string(text), Subject: t.Subject, Bind: t.Bind, Cron: t.Cron, CreatedMs: s.nowMs()}
	if t.Cron != "" {
		c, err := spec.ParseCron(t.Cron)
		if err != nil {
			return bus.Permanent(err)
		}
		rec.NextFireMs = c.Next(s.clock.Now()).UnixMilli()
	}
	b, _ := json.Marshal(rec)
	rev, err := s.kv.kv.Put(ctx, triggerKey(rec.Name), b)
	if err != nil {
		return fmt.Errorf("store trigger %s: %w", rec.Name, err)
	}
	s.view.putTrigger(versioned[TriggerRecord]{rec, rev})
	if rec.Subject != "" {
		if err := s.ensureTriggerStream(ctx); err != nil {
			return err
		}
		s.armTriggerConsumer()
	}
	s.logger.Info("trigger armed", zap.String("trigger", rec.Name), zap.String("subject", rec.Subject), zap.String("cron", rec.Cron))
	return nil
}

// ensureTriggerStream makes the trigger stream capture every armed subject.
func (s *Scheduler) ensureTriggerStream(ctx context.Context) error {
	subjects := s.view.triggerSubjects()
	if len(subjects) == 0 {
		return nil
	}
	// Through the bus: without authentication it declares the stream (and
	// again after a NATS restart that lost it); with it, only admin may,
	// and the bus waits until the declarer (bus.FollowTriggers) has added
	// the subjects of the records stored above.
	err := s.bus.DeclareStream(ctx, bus.TriggerStreamConfig(subjects))
	if err != nil {
		return fmt.Errorf("triggers for %v: %w", subjects, err)
	}
	return nil
}

// armTriggerConsumer lets the trigger consumer start: the first subject
// trigger is armed (or was found armed by Init).
func (s *Scheduler) armTriggerConsumer() { s.armedOnce.Do(func() { close(s.armed) }) }

// consumeTriggers consumes the trigger stream once a subject trigger is
// armed, until ctx ends. A consumer that cannot start fails the scheduler
// (Run returns the cause) rather than leaving armed triggers that would
// never fire.
func (s *Scheduler) consumeTriggers(ctx context.Context) error {
	select {
	case <-s.armed:
	case <-ctx.Done():
		return nil
	}
	if err := s.ensureTriggerStream(ctx); err != nil {
		return err
	}
	return s.bus.ConsumeRaw(ctx, StreamTriggers, bus.ConsumerSpec{Durable: "scheduler-triggers", AckWait: 10 * time.Second}, nil, s.onTriggerEvent)
}

// onTriggerEvent starts one experiment per matching template. The id comes
// from the trigger and the event's stream sequence, so a redelivered event
// maps to the experiment it already started.
func (s *Scheduler) onTriggerEvent(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error {
	var matched []TriggerRecord
	for _, t := range s.view.triggerList() {
		// One armed on a subject the stream never captures (armed before
		// subjects were checked) takes no event: view.triggerSubjects.
		if t.Subject != "" && events.CheckTriggerSubject(t.Subject) == nil && subjectMatches(t.Subject, msg.Subject()) {
			matched = append(matched, t)
		}
	}
	if len(matched) == 0 {
		return bus.Permanent(fmt.Errorf("no armed trigger matches subject %s", msg.Subject()))
	}
	var event map[string]any
	if len(matched[0].Bind) > 0 || len(msg.Data()) > 0 {
		if err := json.Unmarshal(msg.Data(), &event); err != nil && anyBind(matched) {
			return bus.Permanent(fmt.Errorf("event on %s: expected a JSON object to bind values from: %v", msg.Subject(), err))
		}
	}
	for _, t := range matched {
		var sets []string
		for _, path := range slices.Sorted(maps.Keys(t.Bind)) {
			v, ok := lookupJSON(event, t.Bind[path])
			if !ok {
				return bus.Permanent(fmt.Errorf("trigger %s: event on %s has no field %q (bound to %s)", t.Name, msg.Subject(), t.Bind[path], path))
			}
			sets = append(sets, path+"="+v)
		}
		id := fmt.Sprintf("%s-ev%d", t.Name, md.Sequence.Stream)
		if err := s.fire(ctx, t, id, sets); err != nil {
			return err
		}
		s.countFired(ctx, t.Name, md.Sequence.Stream)
	}
	return nil
}

// countFired records that trigger name fired for the event at seq (once
// per event): the console and `greenflow trigger list` show when it last
// fired. A failure to record it is only logged — the experiment started.
func (s *Scheduler) countFired(ctx context.Context, name string, seq uint64) {
	vt, _, err := update(ctx, s.kv, triggerKey(name), func(r *TriggerRecord) (bool, error) {
		if seq <= r.LastEventSeq {
			return false, nil
		}
		r.Fired++
		r.LastFiredMs, r.LastEventSeq = s.nowMs(), seq
		return true, nil
	})
	if err != nil {
		s.logger.Warn("record trigger firing failed", zap.String("trigger", name), zap.Error(err))
		return
	}
	s.view.putTrigger(vt)
}

// fire submits one experiment from a template; bad bindings are permanent.
func (s *Scheduler) fire(ctx context.Context, t TriggerRecord, id string, sets []string) error {
	p, err := spec.Prepare([]byte(t.Template), sets, true)
	if err != nil {
		return bus.Permanent(fmt.Errorf("trigger %s: %w", t.Name, err))
	}
	if err := s.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: p.Resolved, SubmittedBy: "trigger/" + t.Name}, "submit:"+id); err != nil {
		return err
	}
	s.logger.Info("trigger fired", zap.String("trigger", t.Name), zap.String("experiment_id", id))
	return nil
}

// fireCron fires every cron trigger that is due; the revision-checked write
// of the next fire time makes each slot fire once, even with two schedulers.
func (s *Scheduler) fireCron(ctx context.Context, now time.Time) {
	for _, t := range s.view.triggerList() {
		if t.Cron == "" || now.UnixMilli() < t.NextFireMs {
			continue
		}
		c, err := spec.ParseCron(t.Cron)
		if err != nil {
			continue
		}
		var slot int64
		vt, changed, err := update(ctx, s.kv, triggerKey(t.Name), func(r *TriggerRecord) (bool, error) {
			if now.UnixMilli() < r.NextFireMs {
				return false, nil
			}
			slot = r.NextFireMs
			r.NextFireMs = c.Next(now).UnixMilli()
			r.Fired++
			r.LastFiredMs = now.UnixMilli()
			return true, nil
		})
		if err != nil {
			s.logger.Warn("cron trigger update failed", zap.String("trigger", t.Name), zap.Error(err))
			continue
		}
		s.view.putTrigger(vt)
		if !changed {
			continue
		}
		id := fmt.Sprintf("%s-%s", t.Name, time.UnixMilli(slot).UTC().Format("20060102-1504"))
		if err := s.fire(ctx, t, id, nil); err != nil {
			s.logger.Error("cron trigger failed", zap.String("trigger", t.Name), zap.Error(err))
		}
	}
}

func anyBind(ts []TriggerRecord) bool {
	for _, t := range ts {
		if len(t.Bind) > 0 {
			return true
		}
	}
	return false
}

// lookupJSON finds a dotted path in a decoded JSON object and formats the
// value for --set.
func lookupJSON(v map[string]any, path string) (string, bool) {
	var cur any = v
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch x := cur.(type) {
	case string:
		return x, true
	case float64, bool:
		return fmt.Sprint(x), true
	}
	return "", false
}

// subjectMatches is NATS subject matching with * and > wildcards.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}
