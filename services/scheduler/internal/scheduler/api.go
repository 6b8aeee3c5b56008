package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
)

// Request-reply subjects of the scheduler's API (queue group "scheduler").
const (
	SubjectAPISubmit = "gf.api.experiments.submit"
	SubjectAPIList   = "gf.api.experiments.list"
	SubjectAPIGet    = "gf.api.experiments.get"
	SubjectAPICancel = "gf.api.experiments.cancel"
)

// MaxSpecBytes bounds a submitted spec: spec.MaxBytes, enforced by
// spec.Parse on every path; the HTTP handler also stops reading there.
const MaxSpecBytes = spec.MaxBytes

// SubmitRequest is the body of a submission over NATS. Over HTTP the body is
// the spec itself and sets/yes are query parameters.
type SubmitRequest struct {
	Spec string   `json:"spec"`
	Set  []string `json:"set,omitempty"`
	Yes  bool     `json:"yes,omitempty"`
	By   string   `json:"submitted_by,omitempty"`
}

// SubmitReply answers a submission: the id, or every problem found.
type SubmitReply struct {
	ID       string   `json:"id,omitempty"`
	Runs     int      `json:"runs,omitempty"`
	Armed    string   `json:"armed_trigger,omitempty"` // the spec is a template with a trigger
	Error    string   `json:"error,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// RunStatus is one run as list and status show it.
type RunStatus struct {
	RunID      string            `json:"run_id"`
	Index      int               `json:"index"`
	Repetition int               `json:"repetition"`
	Factors    map[string]string `json:"factors"`
	State      string            `json:"state"`
	Reason     string            `json:"reason,omitempty"`
	PhaseEndMs int64             `json:"phase_end_ms,omitempty"`
	Phases     []events.Phase    `json:"phases"`
	// Flags name what the analysis recovered or bridged (e.g.
	// energy_gap_bridged, load_takeover).
	Flags []string `json:"flags,omitempty"`
}

// ExperimentStatus is an experiment with its runs.
type ExperimentStatus struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	State     string      `json:"state"`
	Reason    string      `json:"reason,omitempty"`
	CreatedMs int64       `json:"created_ms"`
	Seed      int64       `json:"seed"`
	RunsTotal int         `json:"runs_total"`
	RunsDone  int         `json:"runs_done"`
	RunsFail  int         `json:"runs_failed"`
	Runs      []RunStatus `json:"runs,omitempty"`
}

// Submit validates a spec and queues it; the experiment is accepted by the
// same path as a CLI submission (an experiment.submit command).
func (s *Scheduler) Submit(ctx context.Context, req SubmitRequest) SubmitReply {
	p, err := spec.Prepare([]byte(req.Spec), req.Set, req.Yes)
	if err != nil {
		var probs spec.Problems
		if errors.As(err, &probs) {
			return SubmitReply{Error: "invalid spec", Problems: probs}
		}
		return SubmitReply{Error: err.Error()}
	}
	id := spec.NewExperimentID(p.Experiment.Metadata.Name, s.clock.Now())
	by := req.By
	if by == "" {
		by = "api"
	}
	if err := s.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: p.Resolved, SubmittedBy: by}, "submit:"+id); err != nil {
		return SubmitReply{Error: err.Error()}
	}
	rep := SubmitReply{ID: id, Runs: p.Runs}
	if t := p.Experiment.Spec.Trigger; t != nil {
		rep.Armed = p.Experiment.Metadata.Name
	}
	return rep
}

// Status returns an experiment and its runs from the scheduler's state;
// false when it is unknown — or not known yet: check Check first (before
// the view has synced, a real experiment may be missing).
func (s *Scheduler) Status(id string) (ExperimentStatus, bool) {
	e, ok := s.view.experiment(id)
	if !ok {
		return ExperimentStatus{}, false
	}
	st := s.summary(e)
	for _, rid := range e.RunIDs {
		r, ok := s.view.run(rid)
		if !ok {
			continue
		}
		st.Runs = append(st.Runs, RunStatus{RunID: r.RunID, Index: r.Index, Repetition: r.Repetition, Factors: r.Factors, State: r.State,
			Reason: r.Reason, PhaseEndMs: r.PhaseEndMs, Phases: r.Phases, Flags: r.Flags})
	}
	return st, true
}

func (s *Scheduler) summary(e ExperimentRecord) ExperimentStatus {
	done, failed, _ := s.view.counts(e, s.cfg.Retries)
	return ExperimentStatus{ID: e.ID, Name: e.Name, State: e.State, Reason: e.Reason, CreatedMs: e.CreatedMs, Seed: e.Seed,
		RunsTotal: len(e.RunIDs), RunsDone: done, RunsFail: failed}
}

// List returns every experiment, newest first.
func (s *Scheduler) List() []ExperimentStatus {
	exps := s.view.experiments()
	sort.Slice(exps, func(i, j int) bool { return exps[i].CreatedMs > exps[j].CreatedMs })
	out := make([]ExperimentStatus, 0, len(exps))
	for _, e := range exps {
		out = append(out, s.summary(e))
	}
	return out
}

// Cancel requests cancellation of an experiment.
func (s *Scheduler) Cancel(ctx context.Context, id, reason string) error {
	if err := s.Check(); err != nil {
		return err
	}
	if _, ok := s.view.experiment(id); !ok {
		return fmt.Errorf("unknown experiment %s", id)
	}
	return s.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: id, Reason: reason}, "")
}

// serveNATS answers the request-reply API until ctx ends.
func (s *Scheduler) serveNATS(ctx context.Context) error {
	nc := s.bus.Conn()
	reply := func(m *nats.Msg, v any) {
		b, _ := json.Marshal(v)
		if err := m.Respond(b); err != nil {
			s.logger.Warn("api reply failed", zap.String("subject", m.Subject), zap.Error(err))
		}
	}
	handlers := map[string]nats.MsgHandler{
		SubjectAPISubmit: func(m *nats.Msg) {
			var req SubmitRequest
			if err := json.Unmarshal(m.Data, &req); err != nil {
				reply(m, SubmitReply{Error: "request body: expected JSON {\"spec\": \"...\"}: " + err.Error()})
				return
			}
			reply(m, s.Submit(ctx, req))
		},
		SubjectAPIList: func(m *nats.Msg) {
			if err := s.Check(); err != nil {
				reply(m, map[string]string{"error": err.Error()})
				return
			}
			reply(m, s.List())
		},
		SubjectAPIGet: func(m *nats.Msg) {
			st, ok := s.Status(strings.TrimSpace(string(m.Data)))
			if err := s.Check(); !ok && err != nil {
				reply(m, map[string]string{"error": err.Error()})
				return
			}
			if !ok {
				reply(m, map[string]string{"error": "unknown experiment " + string(m.Data)})
				return
			}
			reply(m, st)
		},
		SubjectAPICancel: func(m *nats.Msg) {
			if err := s.Cancel(ctx, strings.TrimSpace(string(m.Data)), "cancelled through the API"); err != nil {
				reply(m, map[string]string{"error": err.Error()})
				return
			}
			reply(m, map[string]string{"status": "cancel requested"})
		},
	}
	var subs []*nats.Subscription
	for subj, h := range handlers {
		// A panic in a handler answers the requester with an error and
		// leaves the API serving; it never ends the scheduler.
		sub, err := nc.QueueSubscribe(subj, "scheduler", s.bus.SafeMsgHandler(subj, h))
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	<-ctx.Done()
	for _, sub := range subs {
		_ = sub.Drain()
	}
	return nil
}

// RegisterHTTP adds the scheduler's HTTP API to mux:
//
//	POST /v1/experiments            body: the spec (YAML or JSON); ?set=path=value&yes=true
//	GET  /v1/experiments            list
//	GET  /v1/experiments/{id}       status with runs
//	POST /v1/experiments/{id}/cancel
func (s *Scheduler) RegisterHTTP(mux *http.ServeMux) {
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /v1/experiments", func(w http.ResponseWriter, r *http.Request) {
		// A body over the limit is refused whole (413), never cut and
		// submitted: the cut could still parse as a different spec.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSpecBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				// The same words as spec.Parse, with the size when the
				// client declared it.
				tl := &spec.TooLargeError{What: "the spec", Size: int(max(r.ContentLength, 0))}
				writeJSON(w, http.StatusRequestEntityTooLarge, SubmitReply{Error: tl.Error()})
				return
			}
			writeJSON(w, http.StatusBadRequest, SubmitReply{Error: "read body: " + err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		rep := s.Submit(ctx, SubmitRequest{Spec: string(body), Set: r.URL.Query()["set"], Yes: r.URL.Query().Get("yes") == "true", By: "http"})
		switch {
		case strings.HasPrefix(rep.Error, errSpecTooLarge.Error()):
			writeJSON(w, http.StatusRequestEntityTooLarge, rep)
		case len(rep.Problems) > 0 || errors.Is(errFromReply(rep), spec.ErrTooManyRuns):
			writeJSON(w, http.StatusUnprocessableEntity, rep)
		case rep.Error != "":
			writeJSON(w, http.StatusServiceUnavailable, rep)
		default:
			w.Header().Set("Location", "/v1/experiments/"+rep.ID)
			writeJSON(w, http.StatusAccepted, rep)
		}
	})
	mux.HandleFunc("GET /v1/experiments", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Check(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, s.List())
	})
	mux.HandleFunc("GET /v1/experiments/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, ok := s.Status(r.PathValue("id"))
		if err := s.Check(); !ok && err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown experiment " + r.PathValue("id")})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /v1/experiments/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Cancel(r.Context(), r.PathValue("id"), "cancelled through the HTTP API"); err != nil {
			code := http.StatusNotFound
			if errors.Is(err, ErrNotReady) {
				code = http.StatusServiceUnavailable
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "cancel requested"})
	})
}

// errSpecTooLarge starts the error of a submission over MaxSpecBytes.
var errSpecTooLarge = spec.ErrTooLarge

func errFromReply(r SubmitReply) error {
	if strings.Contains(r.Error, spec.ErrTooManyRuns.Error()) {
		return spec.ErrTooManyRuns
	}
	return nil
}
