package scheduler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// FuzzHTTPSubmit drives POST /v1/experiments with arbitrary bodies and
// query strings. The handler must answer every one with a known status
// and a JSON reply that explains itself: 202 only for a spec that parses
// (with its overrides) into as many runs as it says, 413 exactly when the
// body is over the limit, 422 with problems or the reason, never a panic.
// The scheduler is real (its bus on embedded JetStream) but not running:
// only the API's side of a submission is under test.
func FuzzHTTPSubmit(f *testing.F) {
	ctx := context.Background()
	b, err := bus.Connect(ctx, testenv.NATS(f), "scheduler", zap.NewNop(), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(b.Close)
	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	// The fuzzer sends thousands of requests a second with one token: the
	// rate limit (tested on its own, TestHTTPAPIRefusals) would answer
	// most of them 429 and hide the handler under test.
	cfg.HTTP.RatePerSecond, cfg.HTTP.Burst = 1e9, 1_000_000_000
	s, err := scheduler.New(cfg, scheduler.Deps{Bus: b, Logger: zap.NewNop(), Registry: prometheus.NewRegistry()})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	s.RegisterHTTP(mux)
	token := mintToken(f, b, "fuzz", auth.Operator)

	f.Add([]byte(fmt.Sprintf(specTmpl, 1)), "set=spec.repetitions=2")
	f.Add([]byte(nanSpec), "")
	f.Add([]byte(`{"apiVersion": "greenflow.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "j"}}`), "yes=true")
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, (&url.URL{Path: "/v1/experiments", RawQuery: query}).String(), bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/yaml")
		rec := httptest.NewRecorder()
		start := time.Now()
		mux.ServeHTTP(rec, req)
		var rep scheduler.SubmitReply
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
			t.Fatalf("status %d with a body that is not a JSON reply: %q", rec.Code, rec.Body.String())
		}
		if len(body) > scheduler.MaxSpecBytes {
			if rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("a %d-byte body got %d, expected 413", len(body), rec.Code)
			}
			return
		}
		switch rec.Code {
		case http.StatusAccepted:
			q := req.URL.Query()
			e, err := spec.Parse(body, q["set"])
			if err != nil {
				t.Fatalf("accepted a spec that does not parse: %v", err)
			}
			n, err := e.Count()
			if err != nil || rep.Runs != n || rep.ID == "" {
				t.Fatalf("accepted with id %q and %d runs, the spec counts %d (%v)", rep.ID, rep.Runs, n, err)
			}
		case http.StatusUnprocessableEntity:
			if len(rep.Problems) == 0 && rep.Error == "" {
				t.Fatalf("422 without a reason")
			}
		case http.StatusBadRequest, http.StatusServiceUnavailable:
			if rep.Error == "" {
				t.Fatalf("%d without a reason", rec.Code)
			}
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body.String())
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("one submission took %s", d)
		}
	})
}
