package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/pkg/spec"
)

// MaxSpecBytes bounds a submitted spec: spec.MaxBytes, enforced by
// spec.Parse on every path; the HTTP handler also stops reading there.
const MaxSpecBytes = spec.MaxBytes

// The API's documents are declared once in pkg/schedapi, for the clients
// that read them too (the console, the CLI).
type (
	ErrorReply       = schedapi.ErrorReply
	SubmitReply      = schedapi.SubmitReply
	RunStatus        = schedapi.RunStatus
	ExperimentStatus = schedapi.ExperimentStatus
	Problem          = schedapi.Problem
	ValidateReply    = schedapi.ValidateReply
	TriggerStatus    = schedapi.TriggerStatus
)

// SubmitRequest is a submission: over HTTP the body is the spec and
// sets/yes are query parameters. (The NATS request-reply API that took it
// as JSON is gone: it bypassed the HTTP API's tokens.)
type SubmitRequest struct {
	Spec string   `json:"spec"`
	Set  []string `json:"set,omitempty"`
	Yes  bool     `json:"yes,omitempty"`
	By   string   `json:"submitted_by,omitempty"`
}

// Submit validates a spec and queues it; the experiment is accepted by the
// same path as a CLI submission (an experiment.submit command).
func (s *Scheduler) Submit(ctx context.Context, req SubmitRequest) SubmitReply {
	p, err := spec.Prepare([]byte(req.Spec), req.Set, req.Yes)
	if err != nil {
		var probs spec.Problems
		if errors.As(err, &probs) {
			return refused("invalid spec", probs...)
		}
		return refused(err.Error())
	}
	id := spec.NewExperimentID(p.Experiment.Metadata.Name, s.clock.Now())
	by := req.By
	if by == "" {
		by = "api"
	}
	if err := s.Check(); err != nil && p.Experiment.Spec.Trigger == nil {
		return refused(err.Error())
	}
	if err := s.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: p.Resolved, SubmittedBy: by}, "submit:"+id); err != nil {
		return refused(fmt.Sprintf("queue the submission: %v", err))
	}
	// The experiment's record exists before its id is handed out, so a
	// status or cancel right after the answer finds it (submission.go). A
	// template is armed by the consumer instead and has no record.
	if p.Experiment.Spec.Trigger == nil {
		if err := s.recordSubmission(ctx, id, p.Experiment, p.Runs, by); err != nil {
			// Queued all the same: the consumer creates it; until then a
			// status of it may answer unknown.
			s.logger.Warn("record submission failed", zap.String("experiment_id", id), zap.Error(err))
		}
	}
	rep := SubmitReply{ID: id, Runs: p.Runs}
	if t := p.Experiment.Spec.Trigger; t != nil {
		rep.Armed = p.Experiment.Metadata.Name
	}
	return rep
}

// refused is a submission's refusal: the error and any problems.
func refused(msg string, problems ...string) SubmitReply {
	return SubmitReply{ErrorReply: ErrorReply{Error: msg, Problems: problems}}
}

// Status returns an experiment and its runs from the scheduler's state;
// false when it is unknown — or not known yet: check Check first (before
// the view has synced, a real experiment may be missing). An experiment
// missing from the view is looked up in the bucket, which the view lags.
func (s *Scheduler) Status(id string) (ExperimentStatus, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, ok, err := s.lookup(ctx, id)
	if err != nil && !errors.Is(err, ErrNotReady) {
		s.logger.Warn("look up experiment failed", zap.String("experiment_id", id), zap.Error(err))
	}
	if !ok {
		return ExperimentStatus{}, false
	}
	st := s.summary(e)
	st.Testbed = e.Testbed
	for _, rid := range e.RunIDs {
		r, ok := s.view.run(rid)
		if !ok {
			continue
		}
		st.Runs = append(st.Runs, RunStatus{RunID: r.RunID, Index: r.Index, Repetition: r.Repetition, Factors: r.Factors, State: r.State,
			Reason: r.Reason, PhaseEndMs: r.PhaseEndMs, StartsMs: r.NotBeforeMs, Phases: r.Phases, Flags: r.Flags})
	}
	return st, true
}

func (s *Scheduler) summary(e ExperimentRecord) ExperimentStatus {
	t := s.view.counts(e, s.cfg.Retries)
	total := len(e.RunIDs)
	if e.Pending {
		total = e.RunsPlanned
	}
	return ExperimentStatus{ID: e.ID, Name: e.Name, State: e.State, Reason: e.Reason, CreatedMs: e.CreatedMs, Seed: e.Seed,
		RunsTotal: total, RunsDone: t.done, RunsFail: t.failed, RunsCancelled: t.cancelled, Labels: e.Labels, SubmittedBy: e.SubmittedBy}
}

// List returns every experiment, newest first.
func (s *Scheduler) List() []ExperimentStatus { return s.ListPage(ListQuery{}).Experiments }

// Cancel requests cancellation of an experiment. One not expanded into
// runs yet is cancelled on its record at once (the submission's consumer
// then creates no runs); otherwise the cancel goes to the consumer, which
// marks it, and the sweep stops and cancels the runs (sweep.go). Either
// way it is durable when Cancel returns.
func (s *Scheduler) Cancel(ctx context.Context, id, reason string) error {
	if err := s.Check(); err != nil {
		return err
	}
	e, ok, err := s.lookup(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w %s", errUnknownExperiment, id)
	}
	if e.State == events.ExperimentStateDone || e.State == events.ExperimentStateFailed {
		// Nothing left to cancel; answered, where the consumer would drop
		// it in silence. (A cancelled one is cancelled again: a repeated
		// cancel finishes and announces a cancellation cut short.)
		return fmt.Errorf("%w: experiment %s ended %s", errAlreadyEnded, id, e.State)
	}
	if e.Pending {
		done, err := s.cancelPending(ctx, id, reason)
		if err != nil {
			return fmt.Errorf("cancel experiment %s: %w", id, err)
		}
		if done {
			return nil
		}
	}
	if err := s.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: id, Reason: reason}, ""); err != nil {
		return fmt.Errorf("queue the cancel of experiment %s: %w", id, err)
	}
	return nil
}

// RegisterHTTP adds the scheduler's HTTP API to mux, each route behind the
// least role that may use it (pkg/auth):
//
//	POST /v1/experiments            operator; body: the spec (application/yaml or application/json); ?set=path=value&yes=true
//	GET  /v1/experiments            viewer; list, newest first; ?state=&label=k=v&q=&limit=&cursor= filter and page it
//	                                (the body stays the JSON array; X-Total-Count: matches, X-Next-Cursor: next page's cursor)
//	GET  /v1/experiments/{id}       viewer; status with runs
//	POST /v1/experiments/{id}/cancel operator; optional body {"reason": ...}; 409 when it ended done or failed
//	POST /v1/experiments/validate   viewer; a dry run of a submission: problems with line and path, runs, duration
//	GET  /v1/triggers               viewer; armed templates with when they last fired
//	POST /v1/triggers/{name}/disarm operator
//	/v1/tokens                      admin; token management (auth.RegisterHTTP)
//
// The token API is served here because every deployment runs a scheduler;
// the tokens themselves are in a bucket every API reads.
func (s *Scheduler) RegisterHTTP(mux *http.ServeMux) {
	auth.RegisterHTTP(mux, s.guard, s.tokens)
	for _, rt := range []struct {
		pattern string
		need    auth.Role
		h       http.HandlerFunc
	}{
		{"POST /v1/experiments/validate", auth.Viewer, s.serveValidate},
		{"GET /v1/triggers", auth.Viewer, s.serveTriggers},
		{"POST /v1/triggers/{name}/disarm", auth.Operator, s.serveDisarm},
		{"POST /v1/experiments", auth.Operator, s.serveSubmit},
		{"GET /v1/experiments", auth.Viewer, s.serveList},
		{"GET /v1/experiments/{id}", auth.Viewer, s.serveStatus},
		{"POST /v1/experiments/{id}/cancel", auth.Operator, s.serveCancel},
	} {
		mux.Handle(rt.pattern, s.guard.Require(rt.need, rt.h))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes a refusal: every one is an ErrorReply, which the CLI
// and console read.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorReply{Error: msg})
}

// readSpec reads a spec body; a body over the limit is refused whole
// (413), never cut and submitted: the cut could still parse as a different
// spec.
func readSpec(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSpecBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			// The same words as spec.Parse, with the size when the client
			// declared it.
			tl := &spec.TooLargeError{What: "the spec", Size: int(max(r.ContentLength, 0))}
			writeError(w, http.StatusRequestEntityTooLarge, tl.Error())
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, false
	}
	return body, true
}

func (s *Scheduler) serveValidate(w http.ResponseWriter, r *http.Request) {
	body, ok := readSpec(w, r)
	if !ok {
		return
	}
	// 200 either way: the answer is the verdict, valid or not.
	writeJSON(w, http.StatusOK, s.Validate(SubmitRequest{Spec: string(body), Set: r.URL.Query()["set"], Yes: r.URL.Query().Get("yes") == "true"}))
}

func (s *Scheduler) serveTriggers(w http.ResponseWriter, _ *http.Request) {
	if err := s.Check(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.Triggers())
}

func (s *Scheduler) serveDisarm(w http.ResponseWriter, r *http.Request) {
	if err := s.Disarm(r.Context(), r.PathValue("name")); err != nil {
		code := http.StatusServiceUnavailable
		if errors.Is(err, errUnknownTrigger) {
			code = http.StatusNotFound
		}
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "disarmed", "name": r.PathValue("name")})
}

func (s *Scheduler) serveSubmit(w http.ResponseWriter, r *http.Request) {
	body, ok := readSpec(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	rep := s.Submit(ctx, SubmitRequest{Spec: string(body), Set: r.URL.Query()["set"], Yes: r.URL.Query().Get("yes") == "true", By: submittedBy(r)})
	switch {
	case strings.HasPrefix(rep.Error, errSpecTooLarge.Error()):
		writeJSON(w, http.StatusRequestEntityTooLarge, rep.ErrorReply)
	case len(rep.Problems) > 0 || errors.Is(errFromReply(rep), spec.ErrTooManyRuns):
		writeJSON(w, http.StatusUnprocessableEntity, rep.ErrorReply)
	case rep.Error != "":
		writeJSON(w, http.StatusServiceUnavailable, rep.ErrorReply)
	default:
		w.Header().Set("Location", "/v1/experiments/"+rep.ID)
		writeJSON(w, http.StatusAccepted, rep)
	}
}

func (s *Scheduler) serveList(w http.ResponseWriter, r *http.Request) {
	q, err := ParseListQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.Check(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	// The body is the array it always was, so older clients read a
	// filtered page as they read the whole list; the paging is in headers.
	p := s.ListPage(q)
	w.Header().Set("X-Total-Count", strconv.Itoa(p.Total))
	if p.Next != "" {
		w.Header().Set("X-Next-Cursor", p.Next)
		next := q
		next.Cursor = p.Next
		w.Header().Set("Link", "</v1/experiments?"+next.Values().Encode()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, p.Experiments)
}

func (s *Scheduler) serveStatus(w http.ResponseWriter, r *http.Request) {
	st, ok := s.Status(r.PathValue("id"))
	if err := s.Check(); !ok && err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "unknown experiment "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// serveCancel takes an optional JSON body {"reason": ...} saying why.
func (s *Scheduler) serveCancel(w http.ResponseWriter, r *http.Request) {
	reason := "cancelled through the HTTP API"
	if r.ContentLength != 0 {
		var req struct {
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, `request body: expected JSON {"reason": "..."}: `+err.Error())
			return
		}
		if req.Reason != "" {
			reason = req.Reason
		}
	}
	if err := s.Cancel(r.Context(), r.PathValue("id"), reason); err != nil {
		code := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, errUnknownExperiment):
			code = http.StatusNotFound
		case errors.Is(err, errAlreadyEnded):
			code = http.StatusConflict
		}
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "cancel requested"})
}

// errSpecTooLarge starts the error of a submission over MaxSpecBytes.
var errSpecTooLarge = spec.ErrTooLarge

func errFromReply(r SubmitReply) error {
	if strings.Contains(r.Error, spec.ErrTooManyRuns.Error()) {
		return spec.ErrTooManyRuns
	}
	return nil
}

// submittedBy names who submitted over HTTP: the token's name (never the
// token), so an experiment says whose it is.
func submittedBy(r *http.Request) string {
	if t, ok := auth.FromContext(r.Context()); ok {
		return "http:" + t.Name
	}
	return "http"
}
