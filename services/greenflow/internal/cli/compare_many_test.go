package cli_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

func ujGroup(label string, uj ...float64) cli.Group {
	g := cli.Group{Label: label, Values: map[string][]float64{}}
	for i, v := range uj {
		g.RunIDs = append(g.RunIDs, label+"-r"+string(rune('0'+i)))
		g.Values[results.SUTMicroJPerEvent] = append(g.Values[results.SUTMicroJPerEvent], v)
		g.Values[results.ThroughputEPS] = append(g.Values[results.ThroughputEPS], 1000)
	}
	return g
}

// TestCompareManyAdjustsForTheNumberOfComparisons: four groups against a
// baseline. A clearly different group stays significant after Holm's
// adjustment; a borderline one, significant alone, does not; equal groups
// are not; the adjusted p-values are Holm's of the raw ones.
func TestCompareManyAdjustsForTheNumberOfComparisons(t *testing.T) {
	groups := []cli.Group{
		ujGroup("base", 100, 102, 98, 101, 99),
		ujGroup("same", 100, 101, 99, 102, 98),
		ujGroup("lower", 80, 81, 79, 80, 80),
		ujGroup("edge", 102.5, 103.5, 101.5, 104, 100.5),
	}
	rows := cli.CompareMany(groups, 0.95)
	by := map[string]cli.GroupStat{}
	var raw []float64
	for _, r := range rows {
		if r.Metric == results.SUTMicroJPerEvent {
			by[r.Group] = r
			if r.Group != "base" {
				raw = append(raw, *r.P)
			}
		}
	}
	require.Nil(t, by["base"].P, "the baseline is not tested against itself")
	require.False(t, by["same"].Significant)
	require.True(t, by["lower"].Significant)
	require.InDelta(t, -20, *by["lower"].DiffPct, 0.01)
	require.Less(t, *by["edge"].P, 0.05, "alone, the edge group differs at 5 %")
	require.False(t, by["edge"].Significant, "among three comparisons it does not")
	adj := stats.Holm(raw)
	require.InDelta(t, adj[2], *by["edge"].PHolm, 1e-12)
	require.Equal(t, []float64{80, 81, 79, 80, 80}, by["lower"].Values)

	// Throughput is equal everywhere: no test can say anything (SD 0).
	for _, r := range rows {
		if r.Metric == results.ThroughputEPS {
			require.False(t, r.Significant, r.Group)
		}
	}

	var out bytes.Buffer
	require.NoError(t, cli.WriteCompareMany(&out, "table", groups, 0.95))
	s := out.String()
	require.Contains(t, s, "  A: base (5 runs, baseline)")
	require.Contains(t, s, "  D: edge (5 runs, vs A)")
	require.Contains(t, s, "Holm-adjusted over the 3 comparisons")
	require.Regexp(t, `sut_uj_per_event\s+C\s+5\s+80.00 ± [0-9.]+\s+-20.0\s+[0-9.e-]+\s+-?[0-9.]+\s+\*`, s)

	out.Reset()
	require.NoError(t, cli.WriteCompareMany(&out, "json", groups, 0.95))
	var got struct {
		Rows []cli.GroupStat `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	for _, r := range got.Rows {
		require.Equal(t, "base", r.Baseline)
	}
	require.Len(t, got.Rows, len(rows))

	out.Reset()
	require.NoError(t, cli.WriteCompareMany(&out, "csv", groups, 0.95))
	require.True(t, strings.HasPrefix(out.String(),
		"configuration,letter,group,baseline,metric,unit,n,mean,ci_low,ci_high,ci_crosses_zero,diff_pct,p,p_holm,hedges_g,significant,note\n"))
	require.Contains(t, out.String(), ",C,lower,base,sut_uj_per_event,uJ,5,80,")
}

// TestComparePlotIsOneWellFormedSVG: the groups' means with their
// intervals and every repetition, one legend entry a group.
func TestComparePlotIsOneWellFormedSVG(t *testing.T) {
	groups := []cli.Group{ujGroup("base", 100, 102, 98), ujGroup("lower", 80, 81, 79), ujGroup("edge", 103, 104, 102)}
	svg, err := cli.ComparePlotSVG(groups, results.SUTMicroJPerEvent, 0.95)
	require.NoError(t, err)
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	for _, want := range []string{"A: base", "B: lower", "C: edge", "repetitions"} {
		require.Contains(t, svg, ">"+want+"<")
	}
	drawing := svg[:strings.Index(svg, `<g class="legend">`)]
	require.Equal(t, 3+9, strings.Count(drawing, "<circle"), "a mean per group and every repetition")
	_, err = cli.ComparePlotSVG(groups, "no_such_metric", 0.95)
	require.ErrorContains(t, err, "no group has no_such_metric")
}

// TestComparisonsMarkIntervalsCrossingZero: an energy per event whose
// interval reaches below zero is marked ‡ and explained, in the pairwise
// and the many-group tables and in the machine-readable forms.
func TestComparisonsMarkIntervalsCrossingZero(t *testing.T) {
	base, wide := ujGroup("base", 100, 102, 98), ujGroup("wide", 10, 300, 5)
	var out bytes.Buffer
	require.NoError(t, cli.WriteCompareMany(&out, "table", []cli.Group{base, wide}, 0.95))
	require.Contains(t, out.String(), " ‡")
	require.Contains(t, out.String(), "‡ "+results.CICrossesZeroNote)
	out.Reset()
	require.NoError(t, cli.WriteCompareMany(&out, "table", []cli.Group{base, wide, ujGroup("c", 90, 91, 92)}, 0.95))
	require.Contains(t, out.String(), "‡ "+results.CICrossesZeroNote)
	for _, r := range cli.CompareMany([]cli.Group{base, wide}, 0.95) {
		if r.Metric == results.SUTMicroJPerEvent {
			require.Equal(t, r.Group == "wide", r.CICrossesZero, r.Group)
		}
	}
}
