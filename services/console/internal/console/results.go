package console

import (
	"context"
	"encoding/csv"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

// Results reads an experiment's results from the analyzer with the user's
// token.
func (a *schedulerAPI) Results(ctx context.Context, base func(context.Context) (string, error), token, id string) (results.ExperimentResults, error) {
	var r results.ExperimentResults
	api := schedulerAPI{base: base, hc: a.hc}
	_, err := api.call(ctx, token, http.MethodGet, "/v1/experiments/"+url.PathEscape(id)+"/results", nil, "", &r)
	return r, err
}

// shownStats are the per-configuration metrics of the history page.
var shownStats = []string{results.SUTMicroJPerEvent, results.NodeMicroJPerEvent, results.ThroughputEPS, results.SUTMeanPowerW}

// cell is one mean ± interval of the history table.
type cell struct {
	Text  string
	Marks string // * estimated, ! CV over the threshold, ‡ interval crosses zero
}

type configRow struct {
	Config results.ConfigResults
	Cells  []cell
	Runs   []results.RunResults
}

type historyView struct {
	ID      string
	Level   float64
	Metrics []string
	Rows    []configRow
	Pareto  template.HTML
	Notes   map[string]string
}

func statCell(m results.MetricStats, ok bool) cell {
	if !ok || !m.Mean.Defined() {
		return cell{Text: "—"}
	}
	c := cell{Text: strconv.FormatFloat(float64(m.Mean), 'g', 4, 64)}
	if m.CILow.Defined() && m.CIHigh.Defined() {
		c.Text += " ± " + strconv.FormatFloat(float64(m.CIHigh-m.CILow)/2, 'g', 3, 64)
	}
	if m.Estimated {
		c.Marks += "*"
	}
	if m.CVFlag {
		c.Marks += "!"
	}
	if m.CICrossesZero {
		c.Marks += "‡"
	}
	return c
}

// results reads the results of experiment id as the signed-in user; when
// they cannot be read it answers with the failure and returns false.
func (c *Console) results(w http.ResponseWriter, r *http.Request, id string) (results.ExperimentResults, bool) {
	res, err := c.api.Results(r.Context(), c.deps.AnalyzerURL, userOf(r).plain, id)
	if err != nil {
		c.fail(w, r, "Results of "+id, err)
		return res, false
	}
	return res, true
}

func (c *Console) history(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	res, ok := c.results(w, r, id)
	if !ok {
		return
	}
	hv := historyView{ID: id, Level: res.ConfidenceLevel, Metrics: shownStats, Notes: res.Notes}
	for _, cfg := range res.Configs {
		row := configRow{Config: cfg}
		for _, m := range shownStats {
			st, ok := cfg.Metrics[m]
			row.Cells = append(row.Cells, statCell(st, ok))
		}
		for _, run := range res.Runs {
			if run.ConfigHash == cfg.ConfigHash {
				row.Runs = append(row.Runs, run)
			}
		}
		sort.Slice(row.Runs, func(i, j int) bool { return row.Runs[i].Repetition < row.Runs[j].Repetition })
		hv.Rows = append(hv.Rows, row)
	}
	hv.Pareto = template.HTML(paretoPlot(res.Configs).SVG())
	c.render(w, r, http.StatusOK, "history.html", view{Title: "Results of " + id, Data: hv})
}

// paretoPlot draws each configuration's mean SUT energy per event against
// its mean throughput, with their intervals; the Pareto front joined.
func paretoPlot(cfgs []results.ConfigResults) svgplot.Plot {
	p := svgplot.Plot{Title: "Energy per event vs throughput", XLabel: "throughput (events/s)", YLabel: "SUT energy per event (µJ)",
		YFromZero: true, XPad: true, H: 320}
	all := svgplot.Series{Name: "configurations", Marker: true, ClampLo: true}
	front := svgplot.Series{Name: "Pareto front", Line: true, Marker: true, Color: "#D55E00"}
	type pt struct{ x, y float64 }
	var fr []pt
	for _, cfg := range cfgs {
		x, okx := cfg.Metrics[results.ThroughputEPS]
		y, oky := cfg.Metrics[results.SUTMicroJPerEvent]
		if !okx || !oky || !x.Mean.Defined() || !y.Mean.Defined() {
			continue
		}
		lo, hi := math.NaN(), math.NaN()
		if y.CILow.Defined() && y.CIHigh.Defined() {
			lo, hi = float64(y.CILow), float64(y.CIHigh)
		}
		all.X, all.Y = append(all.X, float64(x.Mean)), append(all.Y, float64(y.Mean))
		all.Lo, all.Hi = append(all.Lo, lo), append(all.Hi, hi)
		all.Labels = append(all.Labels, factorsOf(cfg.Factors))
		if cfg.Pareto {
			fr = append(fr, pt{float64(x.Mean), float64(y.Mean)})
		}
	}
	slices.SortFunc(fr, func(a, b pt) int { return int(math.Copysign(1, a.x-b.x)) })
	for _, q := range fr {
		front.X, front.Y = append(front.X, q.x), append(front.Y, q.y)
	}
	if len(all.X) > 0 {
		p.Series = append(p.Series, all)
	}
	if len(front.X) > 0 {
		p.Series = append(p.Series, front)
	}
	return p
}

// export downloads the per-run results as CSV: one row a run, one column
// a metric, estimated runs marked — what a notebook reads.
func (c *Console) export(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	res, ok := c.results(w, r, id)
	if !ok {
		return
	}
	var names []string
	for _, run := range res.Runs {
		for m := range run.Metrics {
			if !slices.Contains(names, m) {
				names = append(names, m)
			}
		}
	}
	sort.Strings(names)
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-runs.csv"`, id))
	cw := csv.NewWriter(w)
	_ = cw.Write(append([]string{"run_id", "config_hash", "repetition", "factors", "state", "estimated"}, names...))
	for _, run := range res.Runs {
		row := []string{run.RunID, run.ConfigHash, strconv.Itoa(int(run.Repetition)), factorsOf(run.Factors), run.State, strconv.FormatBool(run.Estimated)}
		for _, m := range names {
			if v, ok := run.Metrics[m]; ok {
				row = append(row, strconv.FormatFloat(v, 'g', -1, 64))
			} else {
				row = append(row, "")
			}
		}
		_ = cw.Write(row)
	}
	cw.Flush()
}
