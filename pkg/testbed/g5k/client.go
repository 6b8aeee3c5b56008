// Package g5k is a client of the Grid'5000 REST API: OAR jobs (submit,
// inspect, wait until running, release) and Kwollect metrics (wattmeters).
//
// It follows the API documented at https://api.grid5000.fr/stable: jobs
// live under /sites/{site}/jobs, a submission answers 201 with a Location,
// a deletion 202 (the release is asynchronous), metrics come from
// /sites/{site}/metrics. From outside the testbed every request carries the
// user's basic-auth credentials; from inside (a frontend or a node) none
// are needed. The API throttles: 429 and 503 answers are retried after
// their Retry-After (bounded by the caller's context), every other failure
// is an *APIError naming the request and the API's message.
//
// Time is injected (k8s.io/utils/clock) so waits with back-off run in tests
// against the stand-in (g5ktest) without sleeping.
package g5k

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// DefaultURL is the API's stable root.
const DefaultURL = "https://api.grid5000.fr/stable"

// Config of a Client.
type Config struct {
	URL string // API root; "" means DefaultURL
	// User and Password: basic auth from outside the testbed. Both empty
	// inside it (no auth is sent).
	User, Password string
	// MaxThrottleWait bounds one Retry-After the client honours; a longer
	// one fails the request (the API is overloaded; better to say so).
	// 0 means 2 minutes.
	MaxThrottleWait time.Duration
}

// Deps of a Client.
type Deps struct {
	HTTP  *http.Client // nil: a client with a 60 s timeout
	Clock clock.WithTicker
}

// Client talks to one Grid'5000 API. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	cfg      Config
	http     *http.Client
	clock    clock.WithTicker
	maxThrot time.Duration
}

// New returns a client; it does no I/O.
func New(cfg Config, deps Deps) (*Client, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("grid5000 api url %q: expected an absolute http(s) URL such as %s", cfg.URL, DefaultURL)
	}
	if (cfg.User == "") != (cfg.Password == "") {
		return nil, errors.New("grid5000 credentials: user and password go together (both empty inside the testbed)")
	}
	if deps.HTTP == nil {
		deps.HTTP = &http.Client{Timeout: 60 * time.Second}
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	c := &Client{base: u, cfg: cfg, http: deps.HTTP, clock: deps.Clock, maxThrot: cfg.MaxThrottleWait}
	if c.maxThrot <= 0 {
		c.maxThrot = 2 * time.Minute
	}
	return c, nil
}

// APIError is a failed API request: what was asked, the status and the
// API's own message.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("grid5000 %s %s: %d %s", e.Method, e.Path, e.Status, msg)
}

// IsNotFound reports whether err is the API saying the resource does not
// exist (a job id unknown on its site).
func IsNotFound(err error) bool {
	var a *APIError
	return errors.As(err, &a) && a.Status == http.StatusNotFound
}

// ThrottledError is a request the API kept refusing with 429/503 for
// longer than the client may wait.
type ThrottledError struct {
	Method, Path string
	Status       int
	RetryAfter   time.Duration
	MaxWait      time.Duration // the longest Retry-After the client honours
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("grid5000 %s %s: throttled (%d), asked to retry after %s, longer than the %s the client waits", e.Method, e.Path, e.Status, e.RetryAfter, e.MaxWait)
}

// do sends one request, retrying throttled answers after their
// Retry-After, and decodes a JSON answer into out (when not nil). It
// returns the response headers of the final answer.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any, want ...int) (http.Header, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("grid5000 %s %s: encode request: %w", method, path, err)
		}
	}
	for {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("grid5000 %s %s: %w", method, path, err)
		}
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.cfg.User != "" {
			req.SetBasicAuth(c.cfg.User, c.cfg.Password)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("grid5000 %s %s: %w", method, path, err)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		_ = resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("grid5000 %s %s: read answer: %w", method, path, err)
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			wait := retryAfter(resp.Header.Get("Retry-After"), c.clock.Now())
			if wait > c.maxThrot {
				return nil, &ThrottledError{Method: method, Path: path, Status: resp.StatusCode, RetryAfter: wait, MaxWait: c.maxThrot}
			}
			if err := c.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("grid5000 %s %s: waiting %s after a %d: %w", method, path, wait, resp.StatusCode, err)
			}
			continue
		}
		if !contains(want, resp.StatusCode) {
			return nil, &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: apiMessage(data)}
		}
		if out != nil && len(data) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				return nil, fmt.Errorf("grid5000 %s %s: decode answer: %w", method, path, err)
			}
		}
		return resp.Header, nil
	}
}

// sleep waits d on the client's clock, or until ctx ends.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); absent
// or unreadable means one second.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return time.Second
	}
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(0, t.Sub(now))
	}
	return time.Second
}

// apiMessage extracts the API's error message ({"message": …} or
// {"title":…, "message":…}), else the start of the body.
func apiMessage(data []byte) string {
	var m struct {
		Message string `json:"message"`
		Title   string `json:"title"`
	}
	if json.Unmarshal(data, &m) == nil && (m.Message != "" || m.Title != "") {
		return strings.TrimSpace(m.Title + " " + m.Message)
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
