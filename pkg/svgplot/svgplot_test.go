package svgplot

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNiceTicksCoverTheData(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 6.8, []float64{0, 2, 4, 6, 8}},
		{500, 2000, []float64{500, 1000, 1500, 2000}},
		{-4.5, 6.3, []float64{-5, -2.5, 0, 2.5, 5, 7.5}},
		{3, 3, []float64{2.6, 2.8, 3, 3.2, 3.4}},
		{0, 0, []float64{0, 1}},
	} {
		got := niceTicks(tc.lo, tc.hi, 5)
		if tc.want != nil {
			require.InDeltaSlice(t, tc.want, got, 1e-9, "ticks of [%g, %g]", tc.lo, tc.hi)
		}
		require.LessOrEqual(t, got[0], tc.lo)
		require.GreaterOrEqual(t, got[len(got)-1], tc.hi)
	}
}

func TestTickLabelsCarryNoFloatNoise(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{{3 * 0.05, "0.15"}, {0.1 + 0.2, "0.3"}, {2500, "2500"}, {-0.25, "-0.25"}, {1.5e7, "1.5e+07"}} {
		require.Equal(t, c.want, tickLabel(c.v), "%v", c.v)
	}
}

func wellFormed(t *testing.T, svg string) {
	t.Helper()
	require.NoError(t, WellFormed(svg), svg)
}

func TestPlotSVG(t *testing.T) {
	p := Plot{Title: `power <node & "sut">`, XLabel: "s", YLabel: "W",
		Series: []Series{
			{Name: "node", X: []float64{0, 1, 2}, Y: []float64{5, 6, math.NaN()}, Line: true},
			{Name: "sut", X: []float64{0, 1}, Y: []float64{1, 2}, Lo: []float64{0.5, 1.5}, Hi: []float64{1.5, 2.5}, Marker: true, Labels: []string{"a<b", ""}},
		},
		Bands: []Band{{X0: -1, X1: 0.5, Label: "baseline"}, {X0: 0.5, X1: 2, Label: "measuring"}},
	}
	svg := p.SVG()
	wellFormed(t, svg)
	require.Contains(t, svg, "power &lt;node &amp; &#34;sut&#34;&gt;")
	require.Contains(t, svg, "measuring")
	require.Equal(t, 1, strings.Count(svg, "<polyline"))
	require.Equal(t, 2, strings.Count(beforeLegend(svg), "<circle"), "the markers of the data")

	empty := Plot{Title: "nothing"}.SVG()
	wellFormed(t, empty)
	require.Contains(t, empty, "no data")
}

// beforeLegend is an SVG's drawing without its legend.
func beforeLegend(svg string) string {
	if i := strings.Index(svg, `<g class="legend">`); i >= 0 {
		return svg[:i]
	}
	return svg
}

// TestBandLabelsAreNotStruckThrough: a phase's label is drawn after the
// gridlines and the data, on a white halo.
func TestBandLabelsAreNotStruckThrough(t *testing.T) {
	p := Plot{Title: "power", Series: []Series{{Name: "node", X: []float64{0, 10}, Y: []float64{7, 7}, Line: true}},
		Bands: []Band{{X0: 0, X1: 4, Label: "baseline"}, {X0: 4, X1: 10, Label: "measure"}}}
	svg := p.SVG()
	wellFormed(t, svg)
	for _, label := range []string{"baseline", "measure"} {
		i := strings.Index(svg, ">"+label+"</text>")
		require.Positive(t, i, label)
		require.Greater(t, i, strings.LastIndex(svg, `stroke="#ddd"`), "%s above the gridlines", label)
		require.Greater(t, i, strings.Index(svg, "<polyline"), "%s above the data", label)
		tag := svg[strings.LastIndex(svg[:i], "<text"):i]
		require.Contains(t, tag, `stroke="#fff"`, "a halo behind %s", label)
		require.Contains(t, tag, `paint-order="stroke"`)
	}
}
