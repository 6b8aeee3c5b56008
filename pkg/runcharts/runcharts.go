// Package runcharts draws one run's charts — power per component over its
// phases, consumer lag against the SLO — from ClickHouse as SVG
// (pkg/svgplot), for the CLI's HTML report and the web console's run page
// alike.
package runcharts

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

// Power draws one run's power per component over its phases, averaged in
// at most ~400 time buckets by ClickHouse.
func Power(ctx context.Context, st *store.Store, r store.Run, targets []store.RunTarget) (svgplot.Plot, error) {
	start, end, phases := Span(r)
	p := svgplot.Plot{Title: "Power over time: " + ShortRun(r.RunID), XLabel: "time since measurement start (s)", YLabel: "power (W)",
		YFromZero: true, H: 300}
	if end <= start {
		return p, nil
	}
	var fs map[string]string
	_ = json.Unmarshal([]byte(r.Factors), &fs)
	p.Title = fmt.Sprintf("Power over time: %s, repetition %d (%s)", ShortRun(r.RunID), r.Repetition, Factors(fs))
	origin := phaseBands(&p, r, start, phases)
	bucket := max(int64(1), (end-start)/400)
	buckets, err := st.PowerOverTime(ctx, Nodes(targets), start, end, bucket, Roles(targets))
	if err != nil {
		return p, fmt.Errorf("read power of run %s: %w", r.RunID, err)
	}
	byComp := map[string]*svgplot.Series{}
	var comps []string
	for _, b := range buckets {
		s, ok := byComp[b.Component]
		if !ok {
			s = &svgplot.Series{Name: b.Component, Line: true}
			byComp[b.Component] = s
			comps = append(comps, b.Component)
		}
		s.X = append(s.X, float64(start+b.Bucket*bucket+bucket/2-origin)/1000)
		s.Y = append(s.Y, b.W)
	}
	// Node totals first, drawn heavier; then roles in the table's order.
	order := append([]string{"node"}, results.Roles()...)
	rank := func(c string) int {
		for i, r := range order {
			if strings.HasPrefix(c, r) {
				return i
			}
		}
		return 99
	}
	sort.SliceStable(comps, func(i, j int) bool {
		if rank(comps[i]) != rank(comps[j]) {
			return rank(comps[i]) < rank(comps[j])
		}
		return comps[i] < comps[j]
	})
	for _, c := range comps {
		s := byComp[c]
		if strings.HasPrefix(c, "node") {
			s.Width = 2.4
		}
		if c == results.RoleUnattributed || c == results.RoleOther {
			s.Dash = true
		}
		p.Series = append(p.Series, *s)
	}
	return p, nil
}

// Lag draws a run's consumer lag (summed over partitions) over its
// measured window, with the slope the analyzer fitted and the SLO's largest
// slope, both from the start of the fit: the verdict is which of the two
// the lag follows. The axes fit the lag, not the SLO's line: a lag of a
// few hundred under a threshold of 25,000 would be a flat line at the
// bottom; where the SLO's line leaves the plot a note says where it ends.
func Lag(ctx context.Context, st *store.Store, r store.Run, metrics map[string]float64) (svgplot.Plot, bool, error) {
	var fs map[string]string
	_ = json.Unmarshal([]byte(r.Factors), &fs)
	p := svgplot.Plot{Title: fmt.Sprintf("Consumer lag: %s, repetition %d (%s)", ShortRun(r.RunID), r.Repetition, Factors(fs)),
		XLabel: "time since measurement start (s)", YLabel: "lag (messages)", YFromZero: true, H: 260}
	if r.MeasureEndMs <= r.MeasureStartMs {
		return p, false, nil
	}
	series_, err := st.RunMetricSeries(ctx, r.ExperimentID, r.RunID, kafkasignals.MetricConsumerLag, r.MeasureStartMs, r.MeasureEndMs)
	if err != nil {
		return p, false, fmt.Errorf("read the lag of run %s: %w", r.RunID, err)
	}
	sum := sumOverLabels(series_)
	if len(sum) == 0 {
		return p, false, nil
	}
	ts := make([]int64, 0, len(sum))
	for t := range sum {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	lag := svgplot.Series{Name: "lag, all partitions", Line: true, Marker: len(ts) <= 60}
	for _, t := range ts {
		lag.X = append(lag.X, float64(t-r.MeasureStartMs)/1000)
		lag.Y = append(lag.Y, sum[t])
	}
	p.Series = append(p.Series, lag)
	slope, okSlope := metrics[results.LagTrendSlope]
	limit, okLimit := metrics[results.LagSLOThreshold]
	if okSlope && okLimit {
		start := metrics[results.LagTrendFitStartS]
		end := float64(r.MeasureEndMs-r.MeasureStartMs) / 1000
		y0 := lag.Y[0]
		for i, x := range lag.X {
			if x >= start {
				y0 = lag.Y[i]
				break
			}
		}
		p.Series = append(p.Series,
			svgplot.Series{Name: fmt.Sprintf("fitted trend %+.0f msg/s", slope), X: []float64{start, end}, Y: []float64{y0, y0 + slope*(end-start)},
				Line: true, Dash: true, Color: "#D55E00"},
			svgplot.Series{Name: fmt.Sprintf("SLO limit %+.0f msg/s", limit), X: []float64{start, end}, Y: []float64{y0, y0 + limit*(end-start)},
				Line: true, Dash: true, Color: "#000000", Width: 1, NoScale: true, AboveLabel: "SLO threshold"})
		p.Bands = append(p.Bands, svgplot.Band{X0: 0, X1: start, Label: "not fitted"})
	}
	return p, true, nil
}

// SplitByScale parts a plot's series into big and small: a series whose
// mean is under a tenth of the largest peak goes to small, since one axis
// for both would squash it (a 0.3 W SUT beside a 13 W node) into a flat
// line. The mean, not the peak, decides: a process's power sampled every
// 200 ms is a few CPU ticks, mostly 0 or 0.3 W with a 1.9 W burst when it
// emits, and a burst or two must not keep it on an axis where everything
// else it does is within a few pixels of zero.
func SplitByScale(ss []svgplot.Series) (big, small []svgplot.Series) {
	mean := make([]float64, len(ss))
	var top float64
	for i, s := range ss {
		var sum float64
		var n int
		for _, y := range s.Y {
			if !math.IsNaN(y) {
				top = math.Max(top, math.Abs(y))
				sum += math.Abs(y)
				n++
			}
		}
		if n > 0 {
			mean[i] = sum / float64(n)
		}
	}
	for i, s := range ss {
		if top > 0 && mean[i] < top/10 {
			small = append(small, s)
		} else {
			big = append(big, s)
		}
	}
	return big, small
}

// PowerPlots are a run's power plot as drawn: its big series, and when
// some are small (SplitByScale) a second plot of those on their own scale,
// its title naming them.
func PowerPlots(p svgplot.Plot) []svgplot.Plot {
	big, small := SplitByScale(p.Series)
	p.Series = big
	plots := []svgplot.Plot{p}
	if len(small) > 0 {
		names := make([]string, len(small))
		for i, s := range small {
			names[i] = s.Name
		}
		p.Title, p.Series = p.Title+": smaller components, own scale ("+strings.Join(names, ", ")+")", small
		plots = append(plots, p)
	}
	return plots
}

// Span is the time a run's samples are read for: its recorded phases, or
// the measurement window when none are stored.
func Span(r store.Run) (startMs, endMs int64, phases []events.Phase) {
	_ = json.Unmarshal([]byte(r.Phases), &phases)
	startMs, endMs = r.MeasureStartMs, r.MeasureEndMs
	for _, p := range phases {
		if p.StartMs > 0 && (startMs == 0 || p.StartMs < startMs) {
			startMs = p.StartMs
		}
		if p.EndMs > endMs {
			endMs = p.EndMs
		}
	}
	return startMs, endMs, phases
}

// phaseBands shades a run's phases on p, on a time axis whose 0 is the
// start of the measurement (or of the span, for a run never measured), and
// returns that origin for the plot's points.
func phaseBands(p *svgplot.Plot, r store.Run, start int64, phases []events.Phase) (origin int64) {
	origin = r.MeasureStartMs
	if origin == 0 {
		origin = start
	}
	for _, ph := range phases {
		if ph.EndMs > ph.StartMs {
			p.Bands = append(p.Bands, svgplot.Band{X0: float64(ph.StartMs-origin) / 1000, X1: float64(ph.EndMs-origin) / 1000, Label: ph.Name})
		}
	}
	return origin
}

// sumOverLabels adds a run metric's series (one per label set: partition,
// load generator) into one total per timestamp.
func sumOverLabels(byLabels map[string][]store.Point) map[int64]float64 {
	sum := map[int64]float64{}
	for _, pts := range byLabels {
		for _, pt := range pts {
			sum[pt.TsMs] += pt.Value
		}
	}
	return sum
}

// Nodes returns the distinct nodes of targets, in order.
func Nodes(ts []store.RunTarget) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range ts {
		if !seen[t.Node] {
			seen[t.Node] = true
			out = append(out, t.Node)
		}
	}
	return out
}

// Roles maps target ids to roles.
func Roles(ts []store.RunTarget) map[string]string {
	out := make(map[string]string, len(ts))
	for _, t := range ts {
		out[t.TargetID] = t.Role
	}
	return out
}

// ShortRun is a run id without its experiment: r0003.
func ShortRun(id string) string {
	if i := strings.LastIndex(id, "-r"); i >= 0 {
		return id[i+1:]
	}
	return id
}

// Factors prints a run's factors short: sensors=500,instances=2.
func Factors(f map[string]string) string {
	if len(f) == 0 {
		return "-"
	}
	keys := slices.Sorted(maps.Keys(f))
	parts := make([]string, len(keys))
	for i, k := range keys {
		short := k
		if j := strings.LastIndex(k, "."); j >= 0 {
			short = k[j+1:]
		}
		parts[i] = short + "=" + f[k]
	}
	return strings.Join(parts, ",")
}

// Throughput draws the load a run was offered and what Kafka acknowledged
// of it (summed over the load generators), per second over its phases, as
// the load generators recorded them: whether the run delivered its load.
func Throughput(ctx context.Context, st *store.Store, r store.Run) (svgplot.Plot, bool, error) {
	start, end, phases := Span(r)
	p := svgplot.Plot{Title: "Throughput vs offered load: " + ShortRun(r.RunID), XLabel: "time since measurement start (s)",
		YLabel: "records per second", YFromZero: true, H: 260}
	if end <= start {
		return p, false, nil
	}
	origin := phaseBands(&p, r, start, phases)
	for _, m := range []struct{ metric, name, color string }{
		{kafkasignals.MetricLoadOffered, "offered", "#999999"},
		{kafkasignals.MetricLoadAcked, "delivered", "#0072B2"},
	} {
		byLabels, err := st.RunMetricSeries(ctx, r.ExperimentID, r.RunID, m.metric, start, end)
		if err != nil {
			return p, false, fmt.Errorf("read %s of run %s: %w", m.metric, r.RunID, err)
		}
		sum := sumOverLabels(byLabels)
		if len(sum) == 0 {
			continue
		}
		s := svgplot.Series{Name: m.name, Line: true, Color: m.color, Dash: m.metric == kafkasignals.MetricLoadOffered}
		for _, ts := range slices.Sorted(maps.Keys(sum)) {
			s.X = append(s.X, float64(ts-origin)/1000)
			s.Y = append(s.Y, sum[ts])
		}
		p.Series = append(p.Series, s)
	}
	return p, len(p.Series) > 0, nil
}
