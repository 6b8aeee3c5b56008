package stats_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/stats"
)

// Reference values come from published t tables and from mpmath at 30
// digits (betainc and findroot), noted per case.

func TestStudentTQuantile(t *testing.T) {
	for _, tc := range []struct {
		p, df, want float64
	}{
		{0.975, 1, 12.706204736174693},
		{0.975, 2, 4.3026527297494618}, // table: 4.303
		{0.975, 3, 3.1824463052837084},
		{0.975, 4, 2.7764451051977935},
		{0.975, 5, 2.5705818356363148},
		{0.975, 10, 2.2281388519862742}, // table: 2.228
		{0.975, 30, 2.0422724563012379},
		{0.975, 120, 1.9799304050824405},
		{0.95, 5, 2.0150483733330235},
		{0.995, 5, 4.0321429835552272},
		{0.995, 2, 9.9248432009182886},
		{0.9, 10, 1.3721836411103358},
		{0.6, 7, 0.26316686135202275},
		{0.999, 3, 10.214531852407383},
		{0.975, 5.882352941176471, 2.4588237096991461}, // non-integer (Welch) df
		{0.9995, 1.5, 82.847446703663696},              // heavy tail
		{0.025, 10, -2.2281388519862742},               // symmetry
		{0.5, 3, 0},
		{0.975, math.Inf(1), 1.959963984540054},
	} {
		got := stats.StudentTQuantile(tc.p, tc.df)
		require.InDelta(t, tc.want, got, 1e-9*math.Max(1, math.Abs(tc.want)), "t(%g, %g)", tc.p, tc.df)
	}
	require.True(t, math.IsNaN(stats.StudentTQuantile(0.975, 0)))
	require.True(t, math.IsNaN(stats.StudentTQuantile(1.5, 3)))
}

func TestStudentTCDF(t *testing.T) {
	for _, tc := range []struct {
		t, df, want float64
	}{
		{1.5, 3, 0.88470806737758847},
		{-2.2, 7.5, 0.030599732953058033},
		{0.1, 1000, 0.53981781548819794},
		{0, 4, 0.5},
		{1, 1, 0.75}, // Cauchy: 1/2 + atan(1)/π
		{math.Inf(1), 3, 1},
	} {
		require.InDelta(t, tc.want, stats.StudentTCDF(tc.t, tc.df), 1e-12, "F(%g; %g)", tc.t, tc.df)
	}
	// Independent check: the CDF is the integral of the density (Simpson's
	// rule from 0, where F = 1/2).
	for _, df := range []float64{1.3, 4, 17.25} {
		x := 2.5
		const n = 20000
		h := x / n
		s := stats.StudentTPDF(0, df) + stats.StudentTPDF(x, df)
		for i := 1; i < n; i++ {
			w := 2.0
			if i%2 == 1 {
				w = 4
			}
			s += w * stats.StudentTPDF(float64(i)*h, df)
		}
		require.InDelta(t, 0.5+s*h/3, stats.StudentTCDF(x, df), 1e-10, "df %g", df)
	}
}

func TestRegIncBeta(t *testing.T) {
	for _, tc := range []struct {
		x, a, b, want float64
	}{
		{0.5, 2, 3, 11.0 / 16}, // binomial sum: (6+4+1)/16
		{0.3, 1, 1, 0.3},       // uniform
		{0.4, 3, 1, 0.064},     // x^a
		{0.3, 0.5, 0.5, 0.36901011956554538},
		{0.9, 10, 2.5, 0.8121862743088557},
		{0.55, 100, 100, 0.9216120672877797},
		{0, 2, 2, 0},
		{1, 2, 2, 1},
	} {
		require.InDelta(t, tc.want, stats.RegIncBeta(tc.x, tc.a, tc.b), 1e-12, "I_%g(%g, %g)", tc.x, tc.a, tc.b)
	}
	require.True(t, math.IsNaN(stats.RegIncBeta(1.5, 1, 1)))
}

func TestDescribe(t *testing.T) {
	xs := []float64{10.1, 9.8, 10.4, 10.0, 9.9, 10.3}
	s := stats.Describe(xs, 0.95)
	require.Equal(t, 6, s.N)
	require.InDelta(t, 10.083333333333334, s.Mean, 1e-12)
	require.InDelta(t, 0.23166067138525405, s.SD, 1e-12)
	require.InDelta(t, 0.022974612038207012, s.CV, 1e-12)
	require.InDelta(t, 0.24311296491391745, s.HalfWidth, 1e-10) // t(0.975, 5)·s/√6
	require.InDelta(t, s.Mean-s.HalfWidth, s.CILow, 1e-12)
	require.InDelta(t, 10.05, s.Median, 1e-12)
	require.Equal(t, 9.8, s.Min)
	require.Equal(t, 10.4, s.Max)

	one := stats.Describe([]float64{3}, 0.95)
	require.Equal(t, 3.0, one.Mean)
	require.True(t, math.IsNaN(one.SD))
	require.True(t, math.IsNaN(one.HalfWidth))
	require.True(t, math.IsNaN(stats.Describe(nil, 0.95).Mean))
	require.Equal(t, 2.0, stats.Median([]float64{3, 1, 2}))
}

func TestWelch(t *testing.T) {
	for _, tc := range []struct {
		name          string
		a, b          []float64
		t, df, p, lo  float64
		hedges, cohen float64
	}{
		{"scaled samples", []float64{1, 2, 3, 4, 5}, []float64{2, 4, 6, 8, 10},
			-1.8973665961010276, 5.8823529411764706, 0.10753119493062724, -6.8877416437369752, -1.083244000411692, -1.2},
		{"clear difference", []float64{10.1, 9.8, 10.4, 10.0, 9.9, 10.3}, []float64{11.2, 10.9, 11.5, 11.1},
			-6.9645391071169878, 6.1989369722646926, 0.000377322358240922, math.NaN(), -4.1283551309244159, -4.5733243435703292},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := stats.Welch(tc.a, tc.b, 0.95)
			require.InDelta(t, tc.t, r.T, 1e-9)
			require.InDelta(t, tc.df, r.DF, 1e-9)
			require.InDelta(t, tc.p, r.P, 1e-10)
			if !math.IsNaN(tc.lo) {
				require.InDelta(t, tc.lo, r.CILow, 1e-9)
			}
			require.InDelta(t, tc.cohen, stats.CohenD(tc.a, tc.b), 1e-9)
			require.InDelta(t, tc.hedges, stats.HedgesG(tc.a, tc.b), 1e-9)
		})
	}
	same := stats.Welch([]float64{2, 2}, []float64{2, 2, 2}, 0.95)
	require.Equal(t, 1.0, same.P)
	require.Equal(t, 0.0, stats.Welch([]float64{1, 1}, []float64{2, 2}, 0.95).P)
	require.True(t, math.IsNaN(stats.Welch([]float64{1}, []float64{2, 3}, 0.95).P))
	require.True(t, math.IsNaN(stats.CohenD([]float64{1, 1}, []float64{1, 1})))
}

func TestLinearFit(t *testing.T) {
	slope, icpt, ok := stats.LinearFit([]float64{0, 5, 10, 15}, []float64{100, 110, 120, 130})
	require.True(t, ok)
	require.InDelta(t, 2.0, slope, 1e-12)
	require.InDelta(t, 100.0, icpt, 1e-12)
	// Least squares through noisy points: y = 1 + 0.5x fitted exactly by
	// symmetric residuals.
	slope, icpt, ok = stats.LinearFit([]float64{0, 1, 2, 3}, []float64{1.1, 1.4, 2.1, 2.4})
	require.True(t, ok)
	require.InDelta(t, 0.46, slope, 1e-12)
	require.InDelta(t, 1.06, icpt, 1e-12)
	_, _, ok = stats.LinearFit([]float64{1, 1}, []float64{1, 2})
	require.False(t, ok)
	_, _, ok = stats.LinearFit([]float64{1}, []float64{1})
	require.False(t, ok)
}

func TestParetoFront(t *testing.T) {
	for _, tc := range []struct {
		name string
		pts  []stats.Point
		want []int
	}{
		{"trade-off", []stats.Point{{X: 1000, Y: 50}, {X: 2000, Y: 40}, {X: 3000, Y: 45}, {X: 1500, Y: 60}, {X: 4000, Y: 70}}, []int{1, 2, 4}},
		{"one dominates all", []stats.Point{{X: 1, Y: 5}, {X: 3, Y: 1}, {X: 2, Y: 2}}, []int{1}},
		{"ties are kept", []stats.Point{{X: 2, Y: 2}, {X: 2, Y: 2}}, []int{0, 1}},
		{"NaN skipped", []stats.Point{{X: math.NaN(), Y: 1}, {X: 1, Y: 1}}, []int{1}},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, stats.ParetoFront(tc.pts))
		})
	}
}

func TestHolm(t *testing.T) {
	// Three tests: sorted p 0.01, 0.02, 0.04 → 0.03, 0.04, 0.04 (monotone).
	got := stats.Holm([]float64{0.04, 0.01, math.NaN(), 0.02})
	want := []float64{0.04, 0.03, math.NaN(), 0.04}
	for i := range want {
		if math.IsNaN(want[i]) {
			require.True(t, math.IsNaN(got[i]), "NaN stays NaN")
			continue
		}
		require.InDelta(t, want[i], got[i], 1e-12, "p[%d]", i)
	}
	require.InDelta(t, 0.9, stats.Holm([]float64{0.9})[0], 1e-12, "one test is its own p")
	require.InDelta(t, 1, stats.Holm([]float64{0.6, 0.7})[0], 1e-12, "2 × 0.6 capped at 1")
}

func TestTheilSen(t *testing.T) {
	xs := make([]float64, 11)
	line := make([]float64, 11)
	for i := range xs {
		xs[i] = float64(i)
		line[i] = 100 * float64(i)
	}
	// An exact line: every pairwise slope is its slope.
	f, ok := stats.TheilSen(xs, line, 0.95)
	require.True(t, ok)
	require.Equal(t, stats.SlopeFit{Slope: 100, Low: 100, High: 100, Level: 0.95, Pairs: 55}, f)

	// One spike in the middle: 10 of the 55 pairwise slopes (5 far below,
	// 5 far above) are wrong; Sen's ranks for n = 11 at 95 % are 14 and 42
	// (C = 1.96·√165 = 25.2), both among the 45 right ones. Least squares
	// keeps the slope here (the spike is at the centre) but its standard
	// error is 10,000 times the spike's share.
	spiky := append([]float64(nil), line...)
	spiky[5] += 1e6
	f, ok = stats.TheilSen(xs, spiky, 0.95)
	require.True(t, ok)
	require.Equal(t, 100.0, f.Slope)
	require.Equal(t, 100.0, f.Low)
	require.Equal(t, 100.0, f.High)
	require.True(t, f.Contains(100))
	require.False(t, f.Contains(101))

	// Three points cannot bound a slope at 95 %: Sen's lower rank is below 1.
	f, ok = stats.TheilSen(xs[:3], line[:3], 0.95)
	require.True(t, ok)
	require.Equal(t, 100.0, f.Slope)
	require.True(t, math.IsInf(f.Low, -1) && math.IsInf(f.High, 1))

	// Repeated x: only pairs with distinct x count.
	f, ok = stats.TheilSen([]float64{0, 0, 1}, []float64{0, 5, 2}, 0.95)
	require.True(t, ok)
	require.Equal(t, 2, f.Pairs)
	require.Equal(t, -0.5, f.Slope, "the median of 2 and −3")
	_, ok = stats.TheilSen([]float64{1, 1}, []float64{1, 2}, 0.95)
	require.False(t, ok)
	_, ok = stats.TheilSen([]float64{1}, []float64{1}, 0.95)
	require.False(t, ok)
}

// TestTheilSenCoverage draws 2000 noisy lines of 11 points with a known
// slope: Sen's 95 % interval, rounded outwards, holds the slope in at least
// 95 % of them and not far more (it is not vacuous).
func TestTheilSenCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([]float64, 11)
	ys := make([]float64, 11)
	covered := 0
	const trials = 2000
	for range trials {
		for i := range xs {
			xs[i] = float64(i)
			ys[i] = 3*float64(i) + 5*rng.NormFloat64()
		}
		f, ok := stats.TheilSen(xs, ys, 0.95)
		require.True(t, ok)
		if f.Contains(3) {
			covered++
		}
	}
	share := float64(covered) / trials
	require.GreaterOrEqual(t, share, 0.94)
	require.LessOrEqual(t, share, 0.99)
}
