package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/schedapi"
)

// pageFiles are the page templates, each rendered inside layout.html.
var pageFiles = []string{"signin.html", "experiments.html", "experiment.html", "run.html", "submit.html", "triggers.html", "history.html", "compare.html", "error.html"}

var funcs = template.FuncMap{
	"when": func(ms int64) string {
		if ms == 0 {
			return "—"
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"pct": func(part, whole int) int {
		if whole <= 0 {
			return 0
		}
		return min(100, part*100/whole)
	},
	"factors": factorsOf,
	"pctOf":   func(level float64) float64 { return 100 * level },
	"sub1":    func(level float64) float64 { return 1 - level },
	"deref":   func(v *float64) float64 { return *v },
	"num": func(v *float64) string {
		if v == nil {
			return "—"
		}
		return strconv.FormatFloat(*v, 'g', 4, 64)
	},
	"seconds": func(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', 1, 64) },
	"final":   finalRun,
	"dur":     func(start, end int64) int64 { return max(0, end-start) },
	"rowOf": func(exp string, r schedapi.RunStatus, roles []string) rowData {
		return rowData{Exp: exp, Run: r, Roles: roles}
	},
	"emptyRun": func() schedapi.RunStatus { return schedapi.RunStatus{} },
	"rowOfFinal": func(exp string, r schedapi.RunStatus, roles []string, finals map[string]finalFigures) rowData {
		d := rowData{Exp: exp, Run: r, Roles: roles}
		if f, ok := finals[r.RunID]; ok {
			d.Final = &f
		}
		return d
	},
	"duration": func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
	},
}

// factorsOf prints factors sorted by path: workload.sensors=500, ….
func factorsOf(f map[string]string) string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + f[k]
	}
	return strings.Join(parts, ", ")
}

func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, p := range pageFiles {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/"+p)
		if err != nil {
			return nil, fmt.Errorf("parse page %s: %w", p, err)
		}
		out[p] = t
	}
	return out, nil
}

// rowData is one run's row of the experiment page (also its script's
// template for runs that appear live).
type rowData struct {
	Exp   string
	Run   schedapi.RunStatus
	Roles []string
	// Final is what a finished run's analysis measured (nil while it
	// runs: the live stream fills the row then).
	Final *finalFigures
}

// flashRE is what the console's redirects say after an action.
var flashRE = regexp.MustCompile(`^(submitted|cancel requested|(armed|disarmed) trigger [A-Za-z0-9._-]+)$`)

// user is the signed-in user of a request.
type user struct {
	Token auth.Token
	plain string
	CSRF  string
}

// CanOperate says whether the console offers actions (the scheduler
// decides all the same).
func (u *user) CanOperate() bool { return u != nil && u.Token.Role.Allows(auth.Operator) }

type userKey struct{}

func userOf(r *http.Request) *user {
	u, _ := r.Context().Value(userKey{}).(*user)
	return u
}

// view is what every page template gets.
type view struct {
	Title string
	User  *user
	Flash string
	Error string
	Data  any
}

// routes serves the sign-in pages to anyone, every other page to a signed-in
// user only (page), and every change also only with the session's CSRF
// token (change; signout checks its token itself).
func (c *Console) routes(mux *http.ServeMux) {
	page := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, c.signedIn(h)) }
	change := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, c.signedIn(c.csrf(h))) }
	mux.HandleFunc("GET /signin", c.signinForm)
	mux.HandleFunc("POST /signin", c.signin)
	page("POST /signout", c.signout)
	page("GET /{$}", c.experiments)
	page("GET /experiments/{id}", c.experiment)
	page("GET /experiments/{id}/live", c.live)
	page("GET /experiments/{id}/runs/{run}", c.run)
	change("POST /experiments/{id}/cancel", c.cancel)
	page("GET /experiments/{id}/results", c.history)
	page("GET /experiments/{id}/results.csv", c.export)
	page("GET /experiments/{id}/report.html", c.reportDownload)
	page("GET /experiments/{id}/export.zip", c.exportDownload)
	page("GET /compare", c.compareExperiments)
	page("GET /submit", c.submitForm)
	change("POST /submit", c.submit)
	change("POST /submit/validate", c.validate)
	page("GET /triggers", c.triggers)
	change("POST /triggers/{name}/disarm", c.disarm)
}

// render writes page with v; a template error after the first byte is
// only logged (the status is out).
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, page string, v view) {
	v.User = userOf(r)
	// Only the console's own notices: any text in ?flash= would otherwise
	// show as one (a link could make the page tell its reader anything).
	if !flashRE.MatchString(v.Flash) {
		v.Flash = ""
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := c.pages[page].Execute(w, v); err != nil {
		c.logger.Warn("render page failed", zap.String("page", page), zap.Error(err))
	}
	c.m.requests.WithLabelValues(strings.TrimSuffix(page, ".html"), strconv.Itoa(code/100)+"xx").Inc()
}

// fail renders the error page for err: the API's own status and words
// when the scheduler refused (a viewer's cancel: 403, the token's role).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	c.render(w, r, statusOf(err), "error.html", view{Title: what, Error: what + ": " + err.Error()})
}

// statusOf is the status to answer a failed call of the scheduler's or the
// analyzer's API with: the API's own when it refused, else 502.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusBadGateway
}

// signedIn lets requests with a live session through, each checked against
// the token bucket (a revoked or expired token ends the session at once);
// others go to the sign-in form, or get 401 for a live stream.
func (c *Console) signedIn(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := c.session(r)
		if err != nil {
			if strings.HasSuffix(r.URL.Path, "/live") {
				http.Error(w, "sign in first", http.StatusUnauthorized)
				return
			}
			if !errors.Is(err, errBadSession) {
				c.logger.Info("session refused", zap.Error(err))
			}
			http.SetCookie(w, c.cookie(sessionCookie, "", -1))
			http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
	})
}

func (c *Console) session(r *http.Request) (*user, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, errBadSession
	}
	s, err := c.sealer.open(ck.Value, c.clock.Now())
	if err != nil {
		return nil, err
	}
	t, err := c.tokens.Verify(r.Context(), s.Token)
	if err != nil {
		return nil, fmt.Errorf("verify the session's token: %w", err)
	}
	return &user{Token: t, plain: s.Token, CSRF: s.CSRF}, nil
}

// csrf refuses a form without the session's CSRF token (SameSite=Strict
// already keeps other sites' requests cookieless; this holds where a
// browser does not honour it).
func (c *Console) csrf(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("X-CSRF-Token")
		if got == "" {
			got = r.PostFormValue("csrf")
		}
		if !sameToken(got, userOf(r).CSRF) {
			c.render(w, r, http.StatusForbidden, "error.html", view{Title: "Refused", Error: "the form's CSRF token is missing or stale: reload the page and try again"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// safeNext keeps a post-sign-in redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request) {
	pre := randomString()
	http.SetCookie(w, c.cookie(signinCookie, pre, 600))
	c.render(w, r, http.StatusOK, "signin.html", view{Title: "Sign in", Data: map[string]string{"CSRF": pre, "Next": safeNext(r.URL.Query().Get("next"))}})
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	again := func(code int, msg string) {
		pre := randomString()
		http.SetCookie(w, c.cookie(signinCookie, pre, 600))
		c.render(w, r, code, "signin.html", view{Title: "Sign in", Error: msg, Data: map[string]string{"CSRF": pre, "Next": next}})
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || !sameToken(ck.Value, r.PostFormValue("csrf")) {
		again(http.StatusForbidden, "the sign-in form was stale: try again")
		return
	}
	plain := strings.TrimSpace(r.PostFormValue("token"))
	if plain == "" {
		again(http.StatusUnauthorized, "token: empty, expected an API token (gft_…; greenflow token create makes one)")
		return
	}
	t, err := c.tokens.Verify(r.Context(), plain)
	if err != nil {
		// The words never repeat the token (pkg/auth).
		c.logger.Info("sign-in refused", zap.String("reason", err.Error()))
		again(http.StatusUnauthorized, "sign-in refused: "+err.Error())
		return
	}
	exp := c.clock.Now().Add(c.cfg.SessionTTL)
	if t.ExpiresMs != 0 && t.ExpiresMs < exp.UnixMilli() {
		exp = time.UnixMilli(t.ExpiresMs)
	}
	http.SetCookie(w, c.cookie(sessionCookie, c.sealer.seal(session{Token: plain, CSRF: randomString(), ExpiresMs: exp.UnixMilli()}),
		int(exp.Sub(c.clock.Now()).Seconds())))
	http.SetCookie(w, c.cookie(signinCookie, "", -1))
	c.logger.Info("signed in", zap.String("token_name", t.Name), zap.String("token_id", t.ID), zap.String("role", string(t.Role)))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request) {
	if !sameToken(r.PostFormValue("csrf"), userOf(r).CSRF) {
		c.render(w, r, http.StatusForbidden, "error.html", view{Title: "Refused", Error: "the form's CSRF token is missing or stale"})
		return
	}
	http.SetCookie(w, c.cookie(sessionCookie, "", -1))
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// listView is the experiments page.
type listView struct {
	State, Label, Q string
	States          []string
	Page            ListPage
	NextURL         string
	FirstURL        string
	Paged           bool
}

func (c *Console) experiments(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	lv := listView{State: in.Get("state"), Label: strings.TrimSpace(in.Get("label")), Q: strings.TrimSpace(in.Get("q")), States: events.ExperimentStates}
	q := url.Values{"limit": {strconv.Itoa(c.cfg.PageSize)}}
	filters := url.Values{}
	if lv.State != "" {
		filters.Set("state", lv.State)
	}
	if lv.Label != "" {
		filters.Set("label", lv.Label)
	}
	if lv.Q != "" {
		filters.Set("q", lv.Q)
	}
	for k, v := range filters {
		q[k] = v
	}
	if cur := in.Get("cursor"); cur != "" {
		q.Set("cursor", cur)
		lv.Paged = true
	}
	page, err := c.api.List(r.Context(), userOf(r).plain, q)
	if err != nil {
		c.fail(w, r, "List experiments", err)
		return
	}
	lv.Page = page
	lv.FirstURL = "/?" + filters.Encode()
	if page.Next != "" {
		next := url.Values{}
		for k, v := range filters {
			next[k] = v
		}
		next.Set("cursor", page.Next)
		lv.NextURL = "/?" + next.Encode()
	}
	c.render(w, r, http.StatusOK, "experiments.html", view{Title: "Experiments", Data: lv})
}
