package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// seedHistory writes n finished experiments straight into the scheduler's
// bucket — a history as the scheduler leaves it — and waits until its view
// lists them. Experiment i is created i seconds after base; every third
// failed, every fifth carries label team=blue, the rest team=red.
func seedHistory(tb testing.TB, h *harness, n int, base time.Time) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kv, err := h.bus.KV(ctx, scheduler.Bucket)
	require.NoError(tb, err)
	for i := range n {
		rec := scheduler.ExperimentRecord{ID: fmt.Sprintf("hist-%05d", i), Name: fmt.Sprintf("history-%d", i%7),
			State: events.ExperimentStateDone, RunIDs: []string{}, CreatedMs: base.Add(time.Duration(i) * time.Second).UnixMilli(),
			Labels: map[string]string{"team": "red"}, SubmittedBy: "http:alice"}
		if i%3 == 0 {
			rec.State = events.ExperimentStateFailed
		}
		if i%5 == 0 {
			rec.Labels["team"] = "blue"
		}
		b, _ := json.Marshal(rec)
		_, err := kv.Put(ctx, "exp."+rec.ID, b)
		require.NoError(tb, err)
	}
	testenv.Eventually(tb, 2*time.Minute, "the view lists the seeded history", func() bool {
		return h.sched.ListPage(scheduler.ListQuery{Limit: 1, Text: "hist-"}).Total == n
	})
}

// listPage GETs one page of the list over HTTP.
func listPage(t testing.TB, base string, q url.Values) ([]scheduler.ExperimentStatus, http.Header) {
	t.Helper()
	resp, err := apiClient.Get(base + "/v1/experiments?" + q.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out []scheduler.ExperimentStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out, resp.Header
}

func TestHTTPListFiltersAndPagesOnTheServer(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) { h.passive = true })
	base := apiServer(t, h)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seedHistory(t, h, 120, t0)

	// The old call: every experiment, newest first, as an array.
	all, hdr := listPage(t, base, nil)
	require.Len(t, all, 120)
	require.Equal(t, "hist-00119", all[0].ID)
	require.Equal(t, "120", hdr.Get("X-Total-Count"))
	require.Empty(t, hdr.Get("X-Next-Cursor"))

	// Filters: failed, labelled blue, matching "history-3" → i%3==0, i%5==0, i%7==3.
	got, hdr := listPage(t, base, url.Values{"state": {"failed"}, "label": {"team=blue"}, "q": {"HISTORY-3"}})
	var want []string
	for i := 119; i >= 0; i-- {
		if i%3 == 0 && i%5 == 0 && i%7 == 3 {
			want = append(want, fmt.Sprintf("hist-%05d", i))
		}
	}
	require.NotEmpty(t, want)
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
		require.Equal(t, "blue", e.Labels["team"])
		require.Equal(t, "http:alice", e.SubmittedBy)
	}
	require.Equal(t, want, ids)
	require.Equal(t, fmt.Sprint(len(want)), hdr.Get("X-Total-Count"))

	// Pages of 25 walk the whole list once each, in order, even when an
	// experiment is submitted between two pages (it sorts before them).
	var walked []string
	q := url.Values{"limit": {"25"}}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 6, "pages of 25 over 120 experiments end after 5")
		page, hdr := listPage(t, base, q)
		require.LessOrEqual(t, len(page), 25)
		for _, e := range page {
			walked = append(walked, e.ID)
		}
		if pages == 1 {
			seedOne(t, h, "late-00001", t0.Add(time.Hour))
		}
		next := hdr.Get("X-Next-Cursor")
		if next == "" {
			break
		}
		require.Contains(t, hdr.Get("Link"), "cursor="+url.QueryEscape(next))
		q.Set("cursor", next)
	}
	require.Len(t, walked, 120)
	for i, id := range walked {
		require.Equal(t, fmt.Sprintf("hist-%05d", 119-i), id)
	}

	// Bad parameters: 400 naming each one and what was expected.
	resp, err := apiClient.Get(base + "/v1/experiments?state=finished&limit=0&cursor=x&label==v")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var e map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	require.Contains(t, e["error"], `state "finished": expected one of submitted, queued, running, done, failed, cancelled`)
	require.Contains(t, e["error"], `limit "0": expected a whole number from 1 to 1000`)
	require.Contains(t, e["error"], `cursor "x": expected the next cursor of a previous page`)
	require.Contains(t, e["error"], `label "=v": expected key=value or key`)
}

func TestSubmissionRecordsLabelsAndSubmitter(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	base := apiServer(t, h)
	spec := []byte("apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: labelled, labels: {team: green}}\n" +
		"spec:\n  workload: {sensors: 10, periodMs: 1000, format: avro}\n  phases: {baseline: 50ms, warmup: 50ms, measure: 150ms, cooldown: 50ms}\n")
	rep := submitAccepted(t, base, "", spec)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(rep.ID))
	got, _ := listPage(t, base, url.Values{"label": {"team=green"}})
	require.Len(t, got, 1)
	require.Equal(t, rep.ID, got[0].ID)
	require.Equal(t, "http:api-test", got[0].SubmittedBy, "the token's name, never the token")
}

// seedOne writes one finished experiment created at at.
func seedOne(t testing.TB, h *harness, id string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	kv, err := h.bus.KV(ctx, scheduler.Bucket)
	require.NoError(t, err)
	b, _ := json.Marshal(scheduler.ExperimentRecord{ID: id, Name: "late", State: events.ExperimentStateDone, RunIDs: []string{}, CreatedMs: at.UnixMilli()})
	_, err = kv.Put(ctx, "exp."+id, b)
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, "the view has "+id, func() bool {
		return h.sched.ListPage(scheduler.ListQuery{Text: id}).Total == 1
	})
}

// BenchmarkListPageOf10000: one filtered page of 50 from a history of
// 10,000 experiments in the view, over HTTP as the console asks for it.
func BenchmarkListPageOf10000(b *testing.B) {
	// The per-token rate limit is out of the way: this measures the page.
	h, _ := newHarness(b, func(c *scheduler.Config) { c.HTTP.RatePerSecond, c.HTTP.Burst = 1e9, 1e9 }, func(h *harness) { h.passive = true })
	base := apiServer(b, h)
	seedHistory(b, h, 10000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	q := url.Values{"limit": {"50"}, "state": {"done"}, "label": {"team=red"}}
	b.ResetTimer()
	for range b.N {
		page, _ := listPage(b, base, q)
		require.Len(b, page, 50)
	}
}
