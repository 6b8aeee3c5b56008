package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/schedapi"
)

// ListPage is one page of the experiment list.
type ListPage struct {
	Experiments []schedapi.ExperimentStatus
	Total       int
	Next        string
}

// APIError is a refusal of the scheduler's API: its status and its
// schedapi.ErrorReply.
type APIError struct {
	Status   int
	Message  string
	Problems []string
}

func (e *APIError) Error() string {
	if len(e.Problems) > 0 {
		return fmt.Sprintf("%s (%d): %s", e.Message, e.Status, strings.Join(e.Problems, "; "))
	}
	return fmt.Sprintf("%s (%d)", e.Message, e.Status)
}

// schedulerAPI calls the scheduler's HTTP API with a user's token.
type schedulerAPI struct {
	base func(ctx context.Context) (string, error)
	hc   *http.Client
}

// call sends method path (with query) and decodes a 2xx answer into out
// (when not nil); any other answer is an *APIError with the API's words.
func (a *schedulerAPI) call(ctx context.Context, token, method, path string, body io.Reader, ctype string, out any) (http.Header, error) {
	base, err := a.base(ctx)
	if err != nil {
		return nil, fmt.Errorf("find the scheduler's API: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := schedapi.ReadError(data)
		return resp.Header, &APIError{Status: resp.StatusCode, Message: e.Error, Problems: e.Problems}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// List reads one page of experiments (q: state, label, q, limit, cursor).
func (a *schedulerAPI) List(ctx context.Context, token string, q url.Values) (ListPage, error) {
	var p ListPage
	h, err := a.call(ctx, token, http.MethodGet, "/v1/experiments?"+q.Encode(), nil, "", &p.Experiments)
	if err != nil {
		return p, err
	}
	p.Total, _ = strconv.Atoi(h.Get("X-Total-Count"))
	p.Next = h.Get("X-Next-Cursor")
	return p, nil
}

// Status reads an experiment with its runs.
func (a *schedulerAPI) Status(ctx context.Context, token, id string) (schedapi.ExperimentStatus, error) {
	var e schedapi.ExperimentStatus
	_, err := a.call(ctx, token, http.MethodGet, "/v1/experiments/"+url.PathEscape(id), nil, "", &e)
	return e, err
}

// Cancel asks the scheduler to cancel an experiment.
func (a *schedulerAPI) Cancel(ctx context.Context, token, id, reason string) error {
	body, _ := json.Marshal(map[string]string{"reason": reason})
	_, err := a.call(ctx, token, http.MethodPost, "/v1/experiments/"+url.PathEscape(id)+"/cancel", strings.NewReader(string(body)), "application/json", nil)
	return err
}

func specQuery(sets []string, yes bool) string {
	q := url.Values{"set": sets}
	if yes {
		q.Set("yes", "true")
	}
	return q.Encode()
}

// Validate asks the scheduler for a dry run of a submission.
func (a *schedulerAPI) Validate(ctx context.Context, token, spec string, sets []string, yes bool) (schedapi.ValidateReply, error) {
	var v schedapi.ValidateReply
	_, err := a.call(ctx, token, http.MethodPost, "/v1/experiments/validate?"+specQuery(sets, yes), strings.NewReader(spec), "application/yaml", &v)
	return v, err
}

// Submit submits a spec; a refusal with problems is an *APIError.
func (a *schedulerAPI) Submit(ctx context.Context, token, spec string, sets []string, yes bool) (schedapi.SubmitReply, error) {
	var s schedapi.SubmitReply
	_, err := a.call(ctx, token, http.MethodPost, "/v1/experiments?"+specQuery(sets, yes), strings.NewReader(spec), "application/yaml", &s)
	return s, err
}

// Triggers lists the armed templates.
func (a *schedulerAPI) Triggers(ctx context.Context, token string) ([]schedapi.TriggerStatus, error) {
	var ts []schedapi.TriggerStatus
	_, err := a.call(ctx, token, http.MethodGet, "/v1/triggers", nil, "", &ts)
	return ts, err
}

// Disarm disarms a template.
func (a *schedulerAPI) Disarm(ctx context.Context, token, name string) error {
	_, err := a.call(ctx, token, http.MethodPost, "/v1/triggers/"+url.PathEscape(name)+"/disarm", nil, "", nil)
	return err
}
