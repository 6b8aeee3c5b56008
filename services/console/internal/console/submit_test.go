package console_test

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/pkg/testenv"
)

const goodSpec = "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: from-editor}\nspec:\n" +
	"  workload: {sensors: 10, periodMs: 1000, format: avro}\n  phases: {baseline: 1s, warmup: 1s, measure: 10m, cooldown: 1s}\n"

const badSpec = "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: bad}\nspec:\n  repetitons: 2\n"

// refusal submits spec to the scheduler's API itself, as an operator, and
// returns its refusal, decoded as exactly a schedapi.ErrorReply.
func (e *env) refusal(spec string) schedapi.ErrorReply {
	e.tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.api+"/v1/experiments", strings.NewReader(spec))
	req.Header.Set("Authorization", "Bearer "+e.token(testenv.UniqueName("refused"), auth.Operator))
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := e.apiClient.Do(req)
	require.NoError(e.tb, err)
	defer resp.Body.Close()
	require.Equal(e.tb, http.StatusUnprocessableEntity, resp.StatusCode)
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	var r schedapi.ErrorReply
	require.NoError(e.tb, dec.Decode(&r))
	return r
}

// validate posts the editor's check as its script does.
func (b *browser) validate(csrf, spec, sets string) (int, map[string]any) {
	b.tb.Helper()
	body, _ := json.Marshal(map[string]any{"spec": spec, "sets": sets})
	req, _ := http.NewRequest(http.MethodPost, b.base+"/submit/validate", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err := b.hc.Do(req)
	require.NoError(b.tb, err)
	defer resp.Body.Close()
	var out map[string]any
	if resp.StatusCode == http.StatusOK {
		require.NoError(b.tb, json.NewDecoder(resp.Body).Decode(&out))
	}
	return resp.StatusCode, out
}

func TestEditorValidatesAndSubmitsAsTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	op := e.signedIn("ed-operator", auth.Operator)
	code, page, _ := op.get("/submit")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, `<textarea id="spec"`)
	tok := csrf(t, page)

	// As one types: the problems at their lines with their paths; a valid
	// spec with its runs and duration.
	code, v := op.validate(tok, badSpec, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, false, v["valid"])
	probs := v["problems"].([]any)
	first := probs[0].(map[string]any)
	require.Equal(t, 5.0, first["line"])
	require.Equal(t, "spec.repetitons", first["path"])
	code, v = op.validate(tok, goodSpec, "spec.repetitions=3")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, true, v["valid"], "%v", v)
	require.Equal(t, 3.0, v["runs"])
	require.InDelta(t, 3*603.0, v["estimated_seconds"], 1e-6)
	// Without the session's CSRF token the check is refused.
	code, _ = op.validate("forged", goodSpec, "")
	require.Equal(t, http.StatusForbidden, code)

	// A bad spec submitted without the script: the editor again, the
	// problem at its line, nothing submitted.
	code, page, _ = op.post("/submit", url.Values{"csrf": {tok}, "spec": {badSpec}})
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Contains(t, page, `data-line="5">line 5</button> <code>spec.repetitons</code>`)
	require.Contains(t, page, "bad", "the spec is kept in the editor")
	// The scheduler's refusal of it is a schedapi.ErrorReply and nothing
	// else; the page says its error and shows each of its problems, taken
	// apart at its line (the check's problem of the same text).
	refusal := e.refusal(badSpec)
	require.Equal(t, "invalid spec", refusal.Error)
	require.NotEmpty(t, refusal.Problems)
	require.Contains(t, page, "not submitted: "+refusal.Error)
	checked := map[string]map[string]any{}
	_, v = op.validate(tok, badSpec, "")
	for _, p := range v["problems"].([]any) {
		checked[p.(map[string]any)["text"].(string)] = p.(map[string]any)
	}
	for _, text := range refusal.Problems {
		p, ok := checked[text]
		require.True(t, ok, "the refusal's problem %q is the check's", text)
		require.Contains(t, page, fmt.Sprintf(`data-line="%v">line %v</button> <code>%s</code> %s`, p["line"], p["line"], p["path"],
			html.EscapeString(p["message"].(string))))
	}

	// A good one: to its live page.
	code, _, resp := op.post("/submit", url.Values{"csrf": {tok}, "spec": {goodSpec}, "sets": {"spec.repetitions=2\n"}})
	require.Equal(t, http.StatusSeeOther, code)
	loc := resp.Header.Get("Location")
	require.True(t, strings.HasPrefix(loc, "/experiments/from-editor-"), loc)
	_, page, _ = op.get(loc)
	require.Contains(t, page, "submitted")
	require.Contains(t, page, "ed-operator", "submitted by the signed-in user's token")

	// A viewer may check but not submit: the scheduler refuses its token.
	viewer := e.signedIn("ed-viewer", auth.Viewer)
	_, page, _ = viewer.get("/submit")
	require.Contains(t, page, "may check a spec but not submit it")
	code, v = viewer.validate(csrf(t, page), goodSpec, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, true, v["valid"])
	code, page, _ = viewer.post("/submit", url.Values{"csrf": {csrf(t, page)}, "spec": {goodSpec}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, page, "token ed-viewer has role viewer; this needs operator")
}

const triggerTmpl = "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: on-push}\nspec:\n" +
	"  workload: {sensors: 10, periodMs: 1000, format: avro}\n  trigger: {subject: ci.push}\n"

func TestTriggersPageArmsListsAndDisarms(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	op := e.signedIn("trig-op", auth.Operator)
	_, page, _ := op.get("/submit")
	code, _, resp := op.post("/submit", url.Values{"csrf": {csrf(t, page)}, "spec": {triggerTmpl}})
	require.Equal(t, http.StatusSeeOther, code)
	require.Equal(t, "/triggers?flash=armed+trigger+on-push", resp.Header.Get("Location"))
	var list string
	eventually(t, "the template listed", func() bool {
		_, list, _ = op.get("/triggers")
		return strings.Contains(list, `id="trigger-on-push"`)
	})
	require.Contains(t, list, "subject <code>ci.push</code>")

	viewer := e.signedIn("trig-viewer", auth.Viewer)
	_, vlist, _ := viewer.get("/triggers")
	require.Contains(t, vlist, `id="trigger-on-push"`)
	require.NotContains(t, vlist, "/triggers/on-push/disarm", "a viewer is offered no disarm")
	code, body, _ := viewer.post("/triggers/on-push/disarm", url.Values{"csrf": {csrf(t, vlist)}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, "has role viewer; this needs operator")

	code, _, resp = op.post("/triggers/on-push/disarm", url.Values{"csrf": {csrf(t, list)}})
	require.Equal(t, http.StatusSeeOther, code)
	require.Contains(t, resp.Header.Get("Location"), "disarmed")
	_, list, _ = op.get("/triggers")
	require.NotContains(t, list, `id="trigger-on-push"`)
	require.Contains(t, list, "No template is armed.")
}

func TestCompareNeedsTwoExperiments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	b := e.signedIn("cmp-viewer", auth.Viewer)
	code, page, _ := b.get("/compare?e=only-one&e=only-one")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, page, "expected two or more experiments")
	_, list, _ := b.get("/")
	require.Contains(t, list, `<form method="get" action="/compare"`)
}
