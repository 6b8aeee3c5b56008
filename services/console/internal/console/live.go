package console

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/schedapi"
)

// experimentView is the live experiment page.
type experimentView struct {
	Exp   schedapi.ExperimentStatus
	Final bool
	Roles []string
	// Finals are the analysed runs' figures of a finished experiment (by
	// run id): its page shows them instead of a stream with nothing left
	// to say.
	Finals map[string]finalFigures
}

// finalFigures are a finished run's row as its analysis measured it;
// Power by role ("node", "sut"); Estimated when a model made the power.
type finalFigures struct {
	Records, Offered, Delivered, MicroJ string
	Power                               map[string]string
	Estimated                           bool
}

// finalsOf reads the analysed runs' figures from the results document.
func finalsOf(res results.ExperimentResults) map[string]finalFigures {
	num := func(m map[string]float64, name string, prec int) string {
		v, ok := m[name]
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			return "—"
		}
		return strconv.FormatFloat(v, 'f', prec, 64)
	}
	out := map[string]finalFigures{}
	for _, r := range res.Runs {
		out[r.RunID] = finalFigures{Records: num(r.Metrics, results.RecordsSentTotal, 0), Offered: num(r.Metrics, results.OfferedRateEPS, 0),
			Delivered: num(r.Metrics, results.ThroughputEPS, 1), MicroJ: num(r.Metrics, results.SUTMicroJPerEvent, 1),
			Power:     map[string]string{"node": num(r.Metrics, results.NodeMeanPowerW, 2), "sut": num(r.Metrics, results.SUTMeanPowerW, 2)},
			Estimated: r.Estimated}
	}
	return out
}

// finalRun reports whether a run state is final.
func finalRun(state string) bool {
	return slices.Contains([]string{events.RunStateDone, events.RunStateFailed, events.RunStateCancelled}, state)
}

func (c *Console) experiment(w http.ResponseWriter, r *http.Request) {
	e, err := c.api.Status(r.Context(), userOf(r).plain, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, "Experiment "+r.PathValue("id"), err)
		return
	}
	roles := append([]string{"node"}, "sut", "broker", "loadgen", "platform", "other", "unattributed")
	v := experimentView{Exp: e, Final: events.ExperimentFinal(e.State), Roles: roles}
	if v.Final {
		// Without them the page would show dashes: nothing is live any
		// more. An analyzer that cannot answer leaves the dashes.
		if res, err := c.api.Results(r.Context(), c.deps.AnalyzerURL, userOf(r).plain, e.ID); err == nil {
			v.Finals = finalsOf(res)
		} else {
			c.logger.Info("results of a finished experiment not read", zap.String("experiment_id", e.ID), zap.Error(err))
		}
	}
	c.render(w, r, http.StatusOK, "experiment.html", view{Title: "Experiment " + e.ID, Flash: r.URL.Query().Get("flash"), Data: v})
}

// live streams the experiment's live figures as Server-Sent Events: the
// hub's latest state at once, then every change. The user's token reads
// the experiment first, so only a user who may see it gets its stream.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	e, err := c.api.Status(r.Context(), userOf(r).plain, r.PathValue("id"))
	if err != nil {
		code := http.StatusBadGateway
		if ae, ok := err.(*APIError); ok {
			code = ae.Status
		}
		http.Error(w, err.Error(), code)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// A reconnecting browser waits 3 s; a comment every 20 s keeps proxies
	// from closing an idle stream.
	if _, err := fmt.Fprint(w, "retry: 3000\n\n"); err != nil {
		return
	}
	_ = rc.Flush()
	h, v := c.hubs.join(r.Context(), e.ID, liveSince(e, c.clock.Now().UnixMilli()))
	defer c.hubs.leave(h, v)
	keepAlive := c.clock.NewTicker(20 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepAlive.C():
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case <-v.wake:
			for _, msg := range v.take() {
				if _, err := w.Write(msg); err != nil {
					return
				}
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// liveSince is where a hub's watch starts replaying the experiment's
// events: the start of its earliest run under way (its targets and
// progress are what the page shows live); now when none is (the runs to
// come are followed as they start); its creation before it has runs —
// never the whole history of a long sweep's finished runs.
func liveSince(e schedapi.ExperimentStatus, nowMs int64) int64 {
	since := int64(0)
	for _, r := range e.Runs {
		if finalRun(r.State) || len(r.Phases) == 0 {
			continue
		}
		if start := r.Phases[0].StartMs; start > 0 && (since == 0 || start < since) {
			since = start
		}
	}
	switch {
	case since == 0 && len(e.Runs) > 0:
		return nowMs
	case since == 0 || since < e.CreatedMs:
		return e.CreatedMs
	}
	return since
}

func (c *Console) cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	u := userOf(r)
	if err := c.api.Cancel(r.Context(), u.plain, id, "cancelled from the console by "+u.Token.Name); err != nil {
		c.fail(w, r, "Cancel "+id, err)
		return
	}
	http.Redirect(w, r, "/experiments/"+id+"?flash=cancel+requested", http.StatusSeeOther)
}
