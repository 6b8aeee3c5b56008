package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"
)

// The scheduler's documented request-reply API (README: "by NATS
// request-reply on gf.api.experiments.{submit,list,get,cancel}").
const (
	subjectSubmit = "gf.api.experiments.submit"
	subjectList   = "gf.api.experiments.list"
	subjectCancel = "gf.api.experiments.cancel"
)

type submitRequest struct {
	Spec string   `json:"spec"`
	Set  []string `json:"set,omitempty"`
	By   string   `json:"submitted_by,omitempty"`
}

type submitReply struct {
	ID       string   `json:"id"`
	Runs     int      `json:"runs"`
	Error    string   `json:"error"`
	Problems []string `json:"problems"`
}

// listedExperiment is one entry of the list reply.
type listedExperiment struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// API is a user's client of the scheduler's NATS API.
type API struct{ nc *nats.Conn }

// request retries until a scheduler answers or within passes (a scheduler
// may be restarting).
func (a API) request(ctx context.Context, subject string, body []byte, within time.Duration) ([]byte, error) {
	deadline := time.Now().Add(within)
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := a.nc.RequestWithContext(rctx, subject, body)
		cancel()
		if err == nil {
			return m.Data, nil
		}
		last = err
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("request %s: %w", subject, last)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Submit submits a spec and returns the experiment id and its run count.
func (a API) Submit(ctx context.Context, spec string) (string, int, error) {
	body, _ := json.Marshal(submitRequest{Spec: spec, By: "chaos-suite"})
	data, err := a.request(ctx, subjectSubmit, body, 60*time.Second)
	if err != nil {
		return "", 0, err
	}
	var rep submitReply
	if err := json.Unmarshal(data, &rep); err != nil {
		return "", 0, fmt.Errorf("decode submit reply %q: %w", data, err)
	}
	if rep.Error != "" || rep.ID == "" {
		return "", 0, fmt.Errorf("submit refused: %s %v", rep.Error, rep.Problems)
	}
	return rep.ID, rep.Runs, nil
}

// List returns every experiment the scheduler knows.
func (a API) List(ctx context.Context) ([]listedExperiment, error) {
	data, err := a.request(ctx, subjectList, nil, 30*time.Second)
	if err != nil {
		return nil, err
	}
	var out []listedExperiment
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode list reply: %w", err)
	}
	return out, nil
}

// Cancel asks the scheduler to cancel an experiment.
func (a API) Cancel(ctx context.Context, id string) error {
	_, err := a.request(ctx, subjectCancel, []byte(id), 15*time.Second)
	return err
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
