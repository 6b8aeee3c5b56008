package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Build turns a board into a Grafana dashboard with the foundation SDK.
func Build(b Board) (dashboard.Dashboard, error) {
	d := dashboard.NewDashboardBuilder(b.Title).
		Uid(b.UID).
		Description(b.Description).
		Tags([]string{"greenflow"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-6h", "now").
		Timezone("browser").
		Refresh("30s")
	for _, v := range b.Vars {
		q := dashboard.NewQueryVariableBuilder(v.Name).
			Label(v.Label).
			Datasource(ClickHouse()).
			Query(dashboard.StringOrMap{String: cog.ToPtr(v.SQL)}).
			Definition(v.SQL).
			Refresh(dashboard.VariableRefreshOnDashboardLoad).
			Sort(dashboard.VariableSortDisabled).
			// Only the query's options: the values reach the SQL through
			// Grafana's :singlequote, which escapes ' as \' but leaves a
			// backslash as it is, so a typed value ending in \ could
			// close the literal and append any SELECT the reader may run.
			AllowCustomValue(false)
		if v.TimeRange {
			q.Refresh(dashboard.VariableRefreshOnTimeRangeChanged)
		}
		if v.Multi {
			q.Multi(true).IncludeAll(true)
		}
		d.WithVariable(q)
	}
	for _, a := range b.Annotations {
		d.Annotation(dashboard.NewAnnotationQueryBuilder().
			Name(a.Name).
			Datasource(ClickHouse()).
			Enable(true).
			IconColor("rgba(0, 211, 255, 1)").
			Target(SQL(FormatTable, a.SQL)))
	}
	for i, p := range b.Panels {
		var targets []cog.Builder[variants.Dataquery]
		ds := ClickHouse()
		for j, q := range p.SQL {
			targets = append(targets, SQL(q.Format, q.SQL).RefID(refID(j)))
		}
		if len(p.PromQL) > 0 {
			ds = Prometheus()
			for j, q := range p.PromQL {
				targets = append(targets, prometheus.NewDataqueryBuilder().Expr(q.Expr).LegendFormat(q.Legend).Range().
					Datasource(ds).RefId(refID(j)))
			}
		}
		if len(targets) == 0 {
			return dashboard.Dashboard{}, fmt.Errorf("dashboard %s panel %d %q: no query", b.UID, i+1, p.Title)
		}
		switch p.Kind {
		case KindTimeSeries:
			d.WithPanel(timeseries.NewPanelBuilder().Title(p.Title).Description(p.Description).Datasource(ds).Targets(targets).
				Unit(p.Unit).Span(p.Width).Height(p.Height).
				// The SDK's defaults hide the legend and leave the tooltip
				// mode empty; series are told apart (and marked estimated)
				// only by their names, so both show every series.
				Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).
					DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom)).
				Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending)))
		case KindTable:
			if p.Unit != "" {
				return dashboard.Dashboard{}, fmt.Errorf("dashboard %s table %q: unit %q for every column, expected units per column (Units)",
					b.UID, p.Title, p.Unit)
			}
			t := table.NewPanelBuilder().Title(p.Title).Description(p.Description).Datasource(ds).Targets(targets).
				Span(p.Width).Height(p.Height).
				// The SDK's default footer has a null reducer, which its own
				// strict decoder (and Grafana's schema) refuse.
				Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}))
			cols := make([]string, 0, len(p.Units))
			for c := range p.Units {
				cols = append(cols, c)
			}
			sort.Strings(cols) // the JSON the same on every run
			for _, c := range cols {
				t.OverrideByName(c, []dashboard.DynamicConfigValue{{Id: "unit", Value: p.Units[c]}})
			}
			for _, l := range p.Links {
				t.OverrideByName(l.Column, []dashboard.DynamicConfigValue{{Id: "links", Value: []map[string]any{{"title": l.Title, "url": l.URL}}}})
			}
			d.WithPanel(t)
		default:
			return dashboard.Dashboard{}, fmt.Errorf("dashboard %s panel %q: kind %q, expected timeseries or table", b.UID, p.Title, p.Kind)
		}
	}
	out, err := d.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("build dashboard %s: %w", b.UID, err)
	}
	return out, nil
}

func refID(i int) string { return string(rune('A' + i)) }

// Render returns every dashboard's JSON by file name (<uid>.json), as the
// generator writes it.
func Render() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, b := range Boards() {
		d, err := Build(b)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // SQL's < and > stay readable in the files
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("encode dashboard %s: %w", b.UID, err)
		}
		out[b.UID+".json"] = buf.Bytes()
	}
	return out, nil
}

// Write renders every dashboard into dir, replacing the files there that
// it generated before (a dashboard removed from Boards leaves no file).
func Write(dir string) ([]string, error) {
	files, err := Render()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "greenflow-*.json"))
	for _, f := range old {
		if _, keep := files[filepath.Base(f)]; !keep {
			if err := os.Remove(f); err != nil {
				return nil, fmt.Errorf("remove stale dashboard %s: %w", f, err)
			}
		}
	}
	names := make([]string, 0, len(files))
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("write dashboard %s: %w", name, err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}
