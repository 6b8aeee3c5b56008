package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/schedapi"
)

// API is a user's client of the scheduler's HTTP API, with an operator
// token: the suite submits, lists and cancels as a user does (the NATS
// request-reply API it used before bypassed the tokens and is gone).
type API struct {
	urls   []string // every scheduler instance's base URL
	token  string
	client *http.Client
}

// NewAPI mints an operator token into the token store on b (the suite's
// NATS needs no credentials) and asks the schedulers at urls with it.
func NewAPI(ctx context.Context, b *bus.Bus, urls []string) (API, error) {
	store, err := auth.OpenStore(ctx, b, nil)
	if err != nil {
		return API{}, err
	}
	token, _, err := store.Create(ctx, fmt.Sprintf("chaos-suite-%d", time.Now().UnixNano()), auth.Operator, 0)
	if err != nil {
		return API{}, fmt.Errorf("create the suite's api token: %w", err)
	}
	return API{urls: urls, token: token, client: &http.Client{Timeout: 15 * time.Second}}, nil
}

// request asks each scheduler in turn until one answers with a status in
// ok, retrying within passes (a scheduler may be restarting); the answer
// is decoded into out.
func (a API) request(ctx context.Context, method, path string, body []byte, within time.Duration, out any, ok ...int) error {
	deadline := time.Now().Add(within)
	var last error
	for {
		for _, u := range a.urls {
			last = a.try(ctx, method, u+path, body, out, ok)
			if last == nil {
				return nil
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s %s: %w", method, path, last)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (a API) try(ctx context.Context, method, url string, body []byte, out any, ok []int) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	for _, code := range ok {
		if resp.StatusCode == code {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("decode the answer %q: %w", data, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
}

// Submit submits a spec and returns the experiment id and its run count.
// A spec the scheduler refuses (422) is not retried.
func (a API) Submit(ctx context.Context, spec string) (string, int, error) {
	var rep schedapi.SubmitReply
	if err := a.request(ctx, http.MethodPost, "/v1/experiments", []byte(spec), 60*time.Second, &rep,
		http.StatusAccepted, http.StatusUnprocessableEntity); err != nil {
		return "", 0, err
	}
	if rep.Error != "" || rep.ID == "" {
		return "", 0, fmt.Errorf("submit refused: %s %v", rep.Error, rep.Problems)
	}
	return rep.ID, rep.Runs, nil
}

// List returns every experiment the scheduler knows.
func (a API) List(ctx context.Context) ([]schedapi.ExperimentStatus, error) {
	var out []schedapi.ExperimentStatus
	if err := a.request(ctx, http.MethodGet, "/v1/experiments", nil, 30*time.Second, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out, nil
}

// Cancel asks the scheduler to cancel an experiment.
func (a API) Cancel(ctx context.Context, id string) error {
	return a.request(ctx, http.MethodPost, "/v1/experiments/"+url.PathEscape(id)+"/cancel", nil, 15*time.Second, nil, http.StatusAccepted)
}

// SpecOptions shape the suite's experiments from examples/uc3-local.yaml.
type SpecOptions struct {
	Name        string
	Sensors     []string // the workload.sensors factor's values
	Repetitions int
	Phases      PhaseLengths
	Interval    time.Duration
	// SUT, when set, replaces the example's sut section (the kube
	// segment's kubernetes SUT).
	SUT map[string]any
}

// BuildSpec reads the example spec and applies the suite's settings: short
// phases, the sampling interval, the factor values, repetitions, random
// order. Everything else (SUT, workload, model meter) is the example's.
func BuildSpec(examplePath string, o SpecOptions) (string, error) {
	b, err := os.ReadFile(examplePath)
	if err != nil {
		return "", fmt.Errorf("read example spec: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return "", fmt.Errorf("parse %s: %w", examplePath, err)
	}
	md, _ := doc["metadata"].(map[string]any)
	sp, _ := doc["spec"].(map[string]any)
	if md == nil || sp == nil {
		return "", fmt.Errorf("%s: expected metadata and spec mappings", examplePath)
	}
	md["name"] = o.Name
	if o.SUT != nil {
		sp["sut"] = o.SUT
	}
	sp["repetitions"] = o.Repetitions
	sp["order"] = "random"
	sp["phases"] = map[string]any{"baseline": o.Phases.Baseline.String(), "warmup": o.Phases.Warmup.String(),
		"measure": o.Phases.Measure.String(), "cooldown": o.Phases.Cooldown.String()}
	meters, _ := sp["meters"].(map[string]any)
	if meters == nil {
		meters = map[string]any{}
		sp["meters"] = meters
	}
	meters["interval"] = o.Interval.String()
	sp["factors"] = []any{map[string]any{"name": "workload.sensors", "values": o.Sensors}}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("encode spec: %w", err)
	}
	return string(out), nil
}

// msTime formats epoch milliseconds as a wall-clock time.
func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).Format("15:04:05.000")
}
