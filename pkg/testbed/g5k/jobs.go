package g5k

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// State is a job's state as GreenFlow acts on it. The API reports OAR's
// states, usually in the lower-case forms below, sometimes raw
// (toLaunch, toAckReservation, Finishing, …): Normalize maps both.
type State string

const (
	StateWaiting    State = "waiting"    // queued (incl. OAR's toAckReservation)
	StateLaunching  State = "launching"  // nodes being prepared (incl. toLaunch)
	StateRunning    State = "running"    // nodes are the user's
	StateHold       State = "hold"       // held by the user or an admin: will not start by itself
	StateError      State = "error"      // failed to start or ended in error (incl. toError)
	StateTerminated State = "terminated" // over (incl. Finishing: being released)
)

// Normalize maps an API or raw OAR state to a State; ok is false for a
// state it does not know (reported as is, treated as not yet running).
func Normalize(raw string) (s State, ok bool) {
	switch strings.ToLower(strings.TrimSpace(raw)) {
	case "waiting", "toackreservation":
		return StateWaiting, true
	case "launching", "tolaunch":
		return StateLaunching, true
	case "running", "resuming":
		return StateRunning, true
	case "hold", "suspended":
		return StateHold, true
	case "error", "toerror":
		return StateError, true
	case "terminated", "finishing":
		return StateTerminated, true
	}
	return State(raw), false
}

// Final reports whether a job in s never runs (again).
func (s State) Final() bool { return s == StateError || s == StateTerminated }

// JobRequest is a submission (POST /sites/{site}/jobs).
type JobRequest struct {
	// Resources in OAR's syntax, e.g. "{cluster='taurus'}/nodes=4,walltime=2:00".
	Resources string   `json:"resources"`
	Command   string   `json:"command,omitempty"`
	Types     []string `json:"types,omitempty"`
	Name      string   `json:"name,omitempty"`
	Queue     string   `json:"queue,omitempty"`
	Project   string   `json:"project,omitempty"`
}

// Job is what the API says of one job.
type Job struct {
	UID           int64    `json:"uid"`
	Site          string   `json:"-"`
	RawState      string   `json:"state"`
	AssignedNodes []string `json:"assigned_nodes"`
	Walltime      int64    `json:"walltime"`     // seconds
	StartedAt     int64    `json:"started_at"`   // unix seconds, 0 before it starts
	ScheduledAt   int64    `json:"scheduled_at"` // unix seconds: OAR's predicted start while waiting
	SubmittedAt   int64    `json:"submitted_at"`
	Queue         string   `json:"queue"`
	Name          string   `json:"name"`
	Types         []string `json:"types"`
	Message       string   `json:"message"` // OAR's, e.g. why a job is in error
}

// State is the job's normalized state.
func (j Job) State() State { s, _ := Normalize(j.RawState); return s }

// Ends is when the job's walltime runs out; zero before it started.
func (j Job) Ends() time.Time {
	if j.StartedAt == 0 {
		return time.Time{}
	}
	return time.Unix(j.StartedAt+j.Walltime, 0)
}

// Reason says, for a person watching, why the job is not running yet.
// OAR gives no queue position through the API; its predicted start
// (scheduled_at) is the useful figure.
func (j Job) Reason(now time.Time) string {
	st := j.State()
	var b strings.Builder
	fmt.Fprintf(&b, "job %d on %s is %s", j.UID, j.Site, j.RawState)
	switch st {
	case StateWaiting:
		if j.ScheduledAt > 0 {
			at := time.Unix(j.ScheduledAt, 0)
			fmt.Fprintf(&b, ", predicted start %s (in %s)", at.UTC().Format(time.RFC3339), at.Sub(now).Round(time.Second))
		} else {
			b.WriteString(", no predicted start yet")
		}
	case StateHold:
		b.WriteString(": held, it will not start until resumed (oarresume)")
	case StateError:
		b.WriteString(": it will not start")
	}
	if j.Message != "" {
		fmt.Fprintf(&b, " (%s)", j.Message)
	}
	return b.String()
}

// Submit posts a job on site and returns it as the API then describes it.
func (c *Client) Submit(ctx context.Context, site string, req JobRequest) (Job, error) {
	var j Job
	h, err := c.do(ctx, http.MethodPost, "/sites/"+url.PathEscape(site)+"/jobs", nil, req, &j, http.StatusCreated, http.StatusOK)
	if err != nil {
		return Job{}, fmt.Errorf("submit job on %s: %w", site, err)
	}
	if j.UID == 0 {
		// The body may be empty; the Location names the job.
		if loc := h.Get("Location"); loc != "" {
			if id, err := strconv.ParseInt(path.Base(loc), 10, 64); err == nil {
				j.UID = id
			}
		}
	}
	if j.UID == 0 {
		return Job{}, fmt.Errorf("submit job on %s: the answer names no job (no uid, no Location)", site)
	}
	j.Site = site
	return j, nil
}

// Job returns the job uid of site.
func (c *Client) Job(ctx context.Context, site string, uid int64) (Job, error) {
	var j Job
	if _, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/sites/%s/jobs/%d", url.PathEscape(site), uid), nil, nil, &j, http.StatusOK); err != nil {
		return Job{}, fmt.Errorf("get job %d on %s: %w", uid, site, err)
	}
	j.Site = site
	return j, nil
}

// Release deletes the job (the API answers 202 and releases it
// asynchronously). A job already gone or already over is released.
func (c *Client) Release(ctx context.Context, site string, uid int64) error {
	_, err := c.do(ctx, http.MethodDelete, fmt.Sprintf("/sites/%s/jobs/%d", url.PathEscape(site), uid), nil, nil, nil,
		http.StatusAccepted, http.StatusOK, http.StatusNoContent)
	var a *APIError
	if errors.As(err, &a) && (a.Status == http.StatusNotFound || a.Status == http.StatusGone) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release job %d on %s: %w", uid, site, err)
	}
	return nil
}

// Backoff is how often WaitRunning polls: from First, doubling, up to Max.
type Backoff struct{ First, Max time.Duration }

// DefaultBackoff polls after 2 s, then up to every 30 s: a queued job
// can wait hours, and every poll is a request to a shared API.
var DefaultBackoff = Backoff{First: 2 * time.Second, Max: 30 * time.Second}

// ErrNotStarted is wrapped by WaitRunning's error when the job ended
// (error, terminated) without running.
var ErrNotStarted = errors.New("job will not run")

// WaitRunning polls the job until it runs, reporting each change of what
// it says (state, predicted start) to progress. It fails when the job ends
// in error or terminated, and when ctx ends.
func (c *Client) WaitRunning(ctx context.Context, site string, uid int64, b Backoff, progress func(Job, string)) (Job, error) {
	if b.First <= 0 {
		b = DefaultBackoff
	}
	delay, last := b.First, ""
	for {
		j, err := c.Job(ctx, site, uid)
		if err != nil {
			return Job{}, err
		}
		reason := j.Reason(c.clock.Now())
		if reason != last && progress != nil {
			progress(j, reason)
		}
		last = reason
		switch st := j.State(); {
		case st == StateRunning:
			if len(j.AssignedNodes) == 0 {
				break // running but nodes not listed yet: ask again
			}
			return j, nil
		case st.Final():
			return j, fmt.Errorf("wait for job %d on %s: %s: %w", uid, site, reason, ErrNotStarted)
		}
		if err := c.sleep(ctx, delay); err != nil {
			return j, fmt.Errorf("wait for job %d on %s (last: %s): %w", uid, site, reason, err)
		}
		delay = min(2*delay, b.Max)
	}
}

// Jobs lists user's jobs on site that are not over (waiting, launching,
// running, hold).
func (c *Client) Jobs(ctx context.Context, site, user string) ([]Job, error) {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	q.Set("state", "waiting,launching,running,hold")
	var page struct {
		Items []Job `json:"items"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/sites/"+url.PathEscape(site)+"/jobs", q, nil, &page, http.StatusOK); err != nil {
		return nil, fmt.Errorf("list jobs of %s on %s: %w", user, site, err)
	}
	for i := range page.Items {
		page.Items[i].Site = site
	}
	return page.Items, nil
}
