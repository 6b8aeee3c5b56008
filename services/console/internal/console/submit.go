package console

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/greenflow/greenflow/pkg/schedapi"
)

// submitView is the editor page.
type submitView struct {
	Spec, Sets string
	Yes        bool
	Check      *schedapi.ValidateReply
}

// exampleSpec starts the editor: the dev stack's example, short.
const exampleSpec = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata:
  name: my-experiment
  labels: {purpose: console}
spec:
  sut: {template: uc3-go, backend: local}
  workload: {sensors: 500, periodMs: 1000, format: avro}
  factors:
    - name: workload.sensors
      values: ["500", "2000"]
  repetitions: 1
  phases: {baseline: 3s, warmup: 3s, measure: 12s, cooldown: 1s}
`

// setsOf splits the overrides box: one path=value a line.
func setsOf(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func (c *Console) submitForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "submit.html", view{Title: "Configure and submit", Data: submitView{Spec: exampleSpec}})
}

// submit submits the editor's spec as the user; a refusal re-renders the
// editor with every problem at its line.
func (c *Console) submit(w http.ResponseWriter, r *http.Request) {
	sv := submitView{Spec: r.PostFormValue("spec"), Sets: r.PostFormValue("sets"), Yes: r.PostFormValue("yes") == "on"}
	u := userOf(r)
	rep, err := c.api.Submit(r.Context(), u.plain, sv.Spec, setsOf(sv.Sets), sv.Yes)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity {
			// The problems again, taken apart, for the editor.
			// Without them (the check failed), the refusal's own words.
			msg := err.Error()
			if check, verr := c.api.Validate(r.Context(), u.plain, sv.Spec, setsOf(sv.Sets), sv.Yes); verr == nil {
				sv.Check, msg = &check, ae.Message
			}
			c.render(w, r, http.StatusUnprocessableEntity, "submit.html", view{Title: "Configure and submit", Error: "not submitted: " + msg, Data: sv})
			return
		}
		status := http.StatusBadGateway
		if errors.As(err, &ae) {
			status = ae.Status
		}
		c.render(w, r, status, "submit.html", view{Title: "Configure and submit", Error: "not submitted: " + err.Error(), Data: sv})
		return
	}
	if rep.Armed != "" {
		http.Redirect(w, r, "/triggers?flash="+url.QueryEscape("armed trigger "+rep.Armed), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/experiments/"+url.PathEscape(rep.ID)+"?flash="+url.QueryEscape("submitted"), http.StatusSeeOther)
}

// validate is the editor's check as one types: the scheduler's dry run,
// as JSON. The body is JSON {"spec", "sets", "yes"} with the session's
// CSRF token in X-CSRF-Token.
func (c *Console) validate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Spec string `json:"spec"`
		Sets string `json:"sets"`
		Yes  bool   `json:"yes"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 2<<20)).Decode(&req); err != nil {
		http.Error(w, `request body: expected JSON {"spec": ..., "sets": ...}: `+err.Error(), http.StatusBadRequest)
		return
	}
	v, err := c.api.Validate(r.Context(), userOf(r).plain, req.Spec, setsOf(req.Sets), req.Yes)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(statusOf(err))
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

func (c *Console) triggers(w http.ResponseWriter, r *http.Request) {
	ts, err := c.api.Triggers(r.Context(), userOf(r).plain)
	if err != nil {
		c.fail(w, r, "List triggers", err)
		return
	}
	c.render(w, r, http.StatusOK, "triggers.html", view{Title: "Triggers", Flash: r.URL.Query().Get("flash"), Data: ts})
}

func (c *Console) disarm(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := c.api.Disarm(r.Context(), userOf(r).plain, name); err != nil {
		c.fail(w, r, "Disarm "+name, err)
		return
	}
	http.Redirect(w, r, "/triggers?flash="+url.QueryEscape("disarmed trigger "+name), http.StatusSeeOther)
}
