package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
)

// ListQuery filters and pages the experiment list on the server, so a
// console page of a history of 10,000 experiments summarises only the
// experiments it shows (counting an experiment's runs is the expensive
// part of a summary). The zero query is the whole list, as before.
type ListQuery struct {
	// States keeps experiments in any of these states (none: every state).
	States []string
	// Labels keeps experiments carrying every one: "key=value", or "key"
	// for any value.
	Labels []string
	// Text keeps experiments whose id, name, submitter or a label value
	// contains it, ignoring case.
	Text string
	// Limit is the page size (0: no limit).
	Limit int
	// Cursor continues after the page that returned it as Next.
	Cursor string
}

// MaxListLimit bounds a page: a larger one would be as slow as the whole
// list.
const MaxListLimit = 1000

// ListPage is one page of the list, newest first.
type ListPage struct {
	Experiments []ExperimentStatus `json:"experiments"`
	// Total counts the experiments matching the filters, on every page.
	Total int `json:"total"`
	// Next is the cursor of the following page; empty on the last.
	Next string `json:"next,omitempty"`
}

// ParseListQuery reads GET /v1/experiments' parameters: state (repeated or
// comma-separated), label (repeated), q, limit and cursor. Every problem
// is reported with the parameter and the value.
func ParseListQuery(v url.Values) (ListQuery, error) {
	var q ListQuery
	var errs []error
	for _, s := range v["state"] {
		for _, st := range strings.Split(s, ",") {
			if st = strings.TrimSpace(st); st == "" {
				continue
			}
			if !slices.Contains(events.ExperimentStates, st) {
				errs = append(errs, fmt.Errorf("state %q: expected one of %s", st, strings.Join(events.ExperimentStates, ", ")))
				continue
			}
			q.States = append(q.States, st)
		}
	}
	for _, l := range v["label"] {
		if k, _, _ := strings.Cut(l, "="); strings.TrimSpace(k) == "" {
			errs = append(errs, fmt.Errorf("label %q: expected key=value or key", l))
			continue
		}
		q.Labels = append(q.Labels, l)
	}
	q.Text = strings.TrimSpace(v.Get("q"))
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			errs = append(errs, fmt.Errorf("limit %q: expected a whole number from 1 to %d", s, MaxListLimit))
		}
		q.Limit = n
	}
	if c := v.Get("cursor"); c != "" {
		if _, _, err := parseCursor(c); err != nil {
			errs = append(errs, err)
		}
		q.Cursor = c
	}
	return q, errors.Join(errs...)
}

// Values is q as URL parameters (ParseListQuery's inverse).
func (q ListQuery) Values() url.Values {
	v := url.Values{}
	if len(q.States) > 0 {
		v.Set("state", strings.Join(q.States, ","))
	}
	for _, l := range q.Labels {
		v.Add("label", l)
	}
	if q.Text != "" {
		v.Set("q", q.Text)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	return v
}

// A cursor is the sort key of the last experiment of a page — its
// creation time and id — so a page continues where the previous one ended
// even when experiments were submitted in between (they sort before it).
func cursorOf(e ExperimentRecord) string { return strconv.FormatInt(e.CreatedMs, 10) + "." + e.ID }

func parseCursor(c string) (int64, string, error) {
	ms, id, ok := strings.Cut(c, ".")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || !possibleID(id) {
		return 0, "", fmt.Errorf("cursor %q: expected the next cursor of a previous page", c)
	}
	return n, id, nil
}

// newestFirst orders experiments by creation, newest first, then by id.
func newestFirst(a, b ExperimentRecord) int {
	if c := cmp.Compare(b.CreatedMs, a.CreatedMs); c != 0 {
		return c
	}
	return cmp.Compare(b.ID, a.ID)
}

// matches reports whether e passes q's filters.
func (q ListQuery) matches(e ExperimentRecord) bool {
	if len(q.States) > 0 && !slices.Contains(q.States, e.State) {
		return false
	}
	for _, l := range q.Labels {
		k, want, withValue := strings.Cut(l, "=")
		got, ok := e.Labels[k]
		if !ok || withValue && got != want {
			return false
		}
	}
	if q.Text == "" {
		return true
	}
	text := strings.ToLower(q.Text)
	for _, s := range []string{e.ID, e.Name, e.SubmittedBy} {
		if strings.Contains(strings.ToLower(s), text) {
			return true
		}
	}
	for _, v := range e.Labels {
		if strings.Contains(strings.ToLower(v), text) {
			return true
		}
	}
	return false
}

// page filters exps (in any order), sorts them newest first and cuts the
// page q asks for; only the page's experiments are summarised.
func (s *Scheduler) page(exps []ExperimentRecord, q ListQuery) ListPage {
	kept := exps[:0]
	for _, e := range exps {
		if q.matches(e) {
			kept = append(kept, e)
		}
	}
	slices.SortFunc(kept, newestFirst)
	out := ListPage{Total: len(kept), Experiments: []ExperimentStatus{}}
	if q.Cursor != "" {
		ms, id, _ := parseCursor(q.Cursor)
		after := ExperimentRecord{CreatedMs: ms, ID: id}
		i, _ := slices.BinarySearchFunc(kept, after, newestFirst)
		if i < len(kept) && kept[i].ID == id && kept[i].CreatedMs == ms {
			i++
		}
		kept = kept[i:]
	}
	if q.Limit > 0 && len(kept) > q.Limit {
		kept = kept[:q.Limit]
		out.Next = cursorOf(kept[len(kept)-1])
	}
	for _, e := range kept {
		out.Experiments = append(out.Experiments, s.summary(e))
	}
	return out
}

// ListPage returns the page of the experiment list q asks for.
func (s *Scheduler) ListPage(q ListQuery) ListPage { return s.page(s.view.experiments(), q) }
