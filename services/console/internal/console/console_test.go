package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/console/internal/console"
)

func TestSignInSetsAStrictHttpOnlySessionAndRevocationEndsIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	b := e.browser()

	// Signed out: every page leads to the sign-in form, keeping the page.
	code, _, resp := b.get("/?state=done")
	require.Equal(t, http.StatusSeeOther, code)
	require.Equal(t, "/signin?next="+url.QueryEscape("/?state=done"), resp.Header.Get("Location"))

	// A wrong token is refused with words that say why.
	_, page, _ := b.get("/signin")
	code, body, _ := b.post("/signin", url.Values{"token": {"gft_nope_nope"}, "csrf": {csrf(t, page)}})
	require.Equal(t, http.StatusUnauthorized, code)
	require.Contains(t, body, "sign-in refused")
	// A form without the sign-in cookie's CSRF token is refused.
	code, _, _ = b.post("/signin", url.Values{"token": {e.token("x", auth.Viewer)}, "csrf": {"forged"}})
	require.Equal(t, http.StatusForbidden, code)

	tok := e.token("carol", auth.Viewer)
	_, page, _ = b.get("/signin")
	code, _, resp = b.post("/signin", url.Values{"token": {tok}, "csrf": {csrf(t, page)}, "next": {"//evil.example/"}})
	require.Equal(t, http.StatusSeeOther, code)
	require.Equal(t, "/", resp.Header.Get("Location"), "a redirect off the site is not followed")
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "gf_session" {
			sess = c
		}
	}
	require.NotNil(t, sess)
	require.True(t, sess.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, sess.SameSite)
	require.False(t, sess.Secure, "plain HTTP: a Secure cookie would never come back")
	require.NotContains(t, sess.Value, tok, "the token is sealed, not readable in the cookie")

	code, body, _ = b.get("/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "carol · viewer")

	// A tampered cookie opens nothing.
	u, _ := url.Parse(e.url)
	tampered := *sess
	tampered.Value = sess.Value[:len(sess.Value)-2] + "AA"
	b.hc.Jar.SetCookies(u, []*http.Cookie{&tampered})
	code, _, _ = b.get("/")
	require.Equal(t, http.StatusSeeOther, code)

	// Revoking the token signs the session out at its next request.
	b.hc.Jar.SetCookies(u, []*http.Cookie{sess})
	code, _, _ = b.get("/")
	require.Equal(t, http.StatusOK, code)
	_, err := e.tokens.Revoke(context.Background(), "carol")
	require.NoError(t, err)
	code, _, resp = b.get("/")
	require.Equal(t, http.StatusSeeOther, code)
	require.True(t, strings.HasPrefix(resp.Header.Get("Location"), "/signin"))
}

func TestSecureCookieBehindTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *console.Config) { c.BehindTLS = true })
	b := e.browser()
	_, page, resp := b.get("/signin")
	for _, c := range resp.Cookies() {
		require.True(t, c.Secure, c.Name)
	}
	_, _, resp = b.post("/signin", url.Values{"token": {e.token("dave", auth.Viewer)}, "csrf": {csrf(t, page)}})
	require.NotEmpty(t, resp.Cookies())
	for _, c := range resp.Cookies() {
		require.True(t, c.Secure, c.Name)
	}
}

func TestExperimentListFiltersAndPagesOnTheServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *console.Config) { c.PageSize = 20 })
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	e.seed(45, t0, func(i int, r map[string]any) {
		if i%4 == 0 {
			r["state"] = events.ExperimentStateFailed
		}
		r["labels"] = map[string]string{"site": []string{"lyon", "nancy"}[i%2]}
	})
	b := e.signedIn("erin", auth.Viewer)

	_, page, _ := b.get("/")
	require.Contains(t, page, "45 experiments")
	got := rows(page)
	require.Len(t, got, 20)
	require.Equal(t, "exp-00044", got[0])
	require.Contains(t, page, "site=nancy")
	require.Contains(t, page, "http:alice")

	// Walk the pages by their "next" links: every experiment once.
	var walked []string
	next := "/"
	for range 5 {
		_, page, _ := b.get(next)
		walked = append(walked, rows(page)...)
		i := strings.Index(page, `rel="next" href="`)
		if i < 0 {
			break
		}
		href := page[i+len(`rel="next" href="`):]
		next = strings.ReplaceAll(href[:strings.Index(href, `"`)], "&amp;", "&")
	}
	require.Len(t, walked, 45)
	for i, id := range walked {
		require.Equal(t, fmt.Sprintf("exp-%05d", 44-i), id)
	}

	// Filters go to the server: failed ones in lyon (i%4==0 and even).
	_, page, _ = b.get("/?state=failed&label=site%3Dlyon")
	got = rows(page)
	require.Len(t, got, 12, page)
	for _, id := range got {
		var i int
		_, err := fmt.Sscanf(id, "exp-%05d", &i)
		require.NoError(t, err)
		require.Zero(t, i%4)
	}
	require.Contains(t, page, "12 experiments")
	_, page, _ = b.get("/?q=EXP-00007")
	require.Equal(t, []string{"exp-00007"}, rows(page))
}

func TestAViewerCannotCancelAndAnOperatorCan(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	// A long experiment the scheduler accepted (its runs wait: no other
	// service answers here).
	op := e.token("olga", auth.Operator)
	id := submit(t, e, op)

	viewer := e.signedIn("vic", auth.Viewer)
	code, page, _ := viewer.get("/experiments/" + id)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, page, `id="cancel"`, "a viewer is offered no cancel")
	// Forged all the same: the scheduler refuses the viewer's token.
	_, list, _ := viewer.get("/")
	code, body, _ := viewer.post("/experiments/"+id+"/cancel", url.Values{"csrf": {csrf(t, list)}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, "token vic has role viewer; this needs operator")
	// Without the session's CSRF token nothing reaches the scheduler.
	operator := e.browser()
	operator.signIn(op)
	code, _, _ = operator.post("/experiments/"+id+"/cancel", url.Values{"csrf": {"forged"}})
	require.Equal(t, http.StatusForbidden, code)

	_, page, _ = operator.get("/experiments/" + id)
	require.Contains(t, page, `id="cancel"`)
	code, _, resp := operator.post("/experiments/"+id+"/cancel", url.Values{"csrf": {csrf(t, page)}})
	require.Equal(t, http.StatusSeeOther, code)
	require.Contains(t, resp.Header.Get("Location"), "cancel+requested")
	eventuallyState(t, operator, id, events.ExperimentStateCancelled)
}

// submit submits a one-run experiment with a long measurement through the
// scheduler's API with token and returns its id.
func submit(t testing.TB, e *env, token string) string {
	t.Helper()
	spec := "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: console-test, labels: {team: ui}}\n" +
		"spec:\n  workload: {sensors: 10, periodMs: 1000, format: avro}\n  phases: {baseline: 1s, warmup: 1s, measure: 10m, cooldown: 1s}\n"
	req, _ := http.NewRequest(http.MethodPost, e.api+"/v1/experiments", strings.NewReader(spec))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	loc := resp.Header.Get("Location")
	return loc[strings.LastIndex(loc, "/")+1:]
}

// eventuallyState waits until the experiment page shows state.
func eventuallyState(t *testing.T, b *browser, id, state string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "experiment "+id+" shows "+state, func() bool {
		_, page, _ := b.get("/experiments/" + id)
		return strings.Contains(page, `data-f="exp-state">`+state+`<`)
	})
}

// BenchmarkExperimentsPage: the experiments page (50 rows, filtered by
// state and label) with 10,000 experiments in the scheduler's history,
// rendered by the console from the scheduler's API. Target < 200 ms.
func BenchmarkExperimentsPage(b *testing.B) {
	e := newEnv(b, nil)
	e.seed(10000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), func(i int, r map[string]any) {
		r["labels"] = map[string]string{"site": []string{"lyon", "nancy"}[i%2]}
	})
	br := e.signedIn("bench", auth.Viewer)
	b.ResetTimer()
	for range b.N {
		code, page, _ := br.get("/?state=done&label=site%3Dlyon")
		if code != http.StatusOK || len(rows(page)) != 50 {
			b.Fatalf("page: %d, %d rows", code, len(rows(page)))
		}
	}
}
