package console

import (
	"html/template"
	"net/http"
	"slices"
	"sort"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/pkg/store"
)

// runView is the run page.
type runView struct {
	ExpID   string
	Run     schedapi.RunStatus
	Stored  bool
	Figures []figure
	Charts  []template.HTML
	Meters  []store.RunMeter
	Prov    *results.Provenance
	Notes   []string
}

// figure is one result of the run, as the page lists it.
type figure struct {
	Name, Help, Unit string
	Value            float64
	Estimated        bool
}

// runFigures are the run-scope results the page shows, in order.
var runFigures = []string{results.SUTMicroJPerEvent, results.NodeMicroJPerEvent, results.SUTEnergyJ, results.NodeEnergyJ,
	results.UnattributedEnergyJ, results.SUTMeanPowerW, results.NodeMeanPowerW, results.OfferedRateEPS, results.ThroughputEPS,
	results.EventsDeliveredRatio, results.Events, results.LagTrendSlope, results.LagSLOThreshold, results.LagSLOOK, results.DurationS}

func (c *Console) run(w http.ResponseWriter, r *http.Request) {
	id, runID := r.PathValue("id"), r.PathValue("run")
	// The user's token reads the experiment first: a page only for who
	// may see it.
	e, err := c.api.Status(r.Context(), userOf(r).plain, id)
	if err != nil {
		c.fail(w, r, "Experiment "+id, err)
		return
	}
	i := slices.IndexFunc(e.Runs, func(x schedapi.RunStatus) bool { return x.RunID == runID })
	if i < 0 {
		c.render(w, r, http.StatusNotFound, "error.html", view{Title: "Run " + runID, Error: "experiment " + id + " has no run " + runID})
		return
	}
	v := runView{ExpID: id, Run: e.Runs[i]}
	ctx := r.Context()
	st := c.deps.Store
	runs, err := st.Runs(ctx, id)
	if err != nil {
		c.fail(w, r, "Read run "+runID, err)
		return
	}
	var sr store.Run
	if j := slices.IndexFunc(runs, func(x store.Run) bool { return x.RunID == runID }); j >= 0 {
		sr, v.Stored = runs[j], true
	}
	if v.Stored {
		targets, err := st.RunTargets(ctx, id)
		if err != nil {
			c.fail(w, r, "Read run "+runID, err)
			return
		}
		var mine []store.RunTarget
		for _, t := range targets {
			if t.RunID == runID {
				mine = append(mine, t)
			}
		}
		if len(mine) == 0 {
			v.Notes = append(v.Notes, "The run's targets are recorded at its analysis: until then power is shown per node, without roles.")
		}
		if p, err := runcharts.Power(ctx, st, sr, mine); err != nil {
			c.fail(w, r, "Draw run "+runID, err)
			return
		} else {
			for _, plot := range runcharts.PowerPlots(p) {
				v.Charts = append(v.Charts, template.HTML(plot.SVG()))
			}
		}
		if p, ok, err := runcharts.Throughput(ctx, st, sr); err == nil && ok {
			v.Charts = append(v.Charts, template.HTML(p.SVG()))
		}
		res, err := st.RunScopeResults(ctx, id, []string{runID})
		if err != nil {
			c.fail(w, r, "Read the results of run "+runID, err)
			return
		}
		metrics := map[string]float64{}
		estimated := map[string]bool{}
		for _, x := range res {
			metrics[x.Metric], estimated[x.Metric] = x.Value, x.Estimated
		}
		for _, name := range runFigures {
			val, ok := metrics[name]
			if !ok {
				continue
			}
			f := figure{Name: name, Value: val, Estimated: estimated[name]}
			if m, ok := results.Lookup(name); ok {
				f.Help, f.Unit = m.Help, m.Unit
			}
			v.Figures = append(v.Figures, f)
		}
		if p, ok, err := runcharts.Lag(ctx, st, sr, metrics); err == nil && ok {
			v.Charts = append(v.Charts, template.HTML(p.SVG()))
		}
		if v.Meters, err = st.RunMeters(ctx, id, runID); err != nil {
			c.fail(w, r, "Read the meters of run "+runID, err)
			return
		}
		sort.Slice(v.Meters, func(a, b int) bool { return v.Meters[a].Node < v.Meters[b].Node })
		if prov, err := st.Provenance(ctx, id); err == nil {
			v.Prov = &prov
		}
	}
	c.render(w, r, http.StatusOK, "run.html", view{Title: "Run " + runID, Data: v})
}
