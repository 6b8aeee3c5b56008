package stats

import (
	"cmp"
	"math"
	"slices"
	"sort"
)

// WelchResult is the outcome of Welch's unequal-variance t-test of
// mean(A) - mean(B).
type WelchResult struct {
	MeanA, MeanB float64
	Diff         float64 // MeanA - MeanB
	SE           float64 // standard error of Diff
	T            float64
	DF           float64 // Welch–Satterthwaite degrees of freedom
	P            float64 // two-sided p-value
	// CILow and CIHigh bound Diff at the requested level.
	CILow, CIHigh float64
}

// Welch runs Welch's two-sample t-test (two-sided) with a confidence
// interval for the difference of means at level. Each sample needs at least
// two values; otherwise every statistic is NaN. When both samples have zero
// variance the test is degenerate: P is 1 for equal means and 0 otherwise.
func Welch(a, b []float64, level float64) WelchResult {
	r := WelchResult{MeanA: Mean(a), MeanB: Mean(b)}
	r.Diff = r.MeanA - r.MeanB
	nan := math.NaN()
	if len(a) < 2 || len(b) < 2 {
		r.SE, r.T, r.DF, r.P, r.CILow, r.CIHigh = nan, nan, nan, nan, nan, nan
		return r
	}
	va, vb := Variance(a)/float64(len(a)), Variance(b)/float64(len(b))
	r.SE = math.Sqrt(va + vb)
	if r.SE == 0 {
		r.DF = float64(len(a) + len(b) - 2)
		r.CILow, r.CIHigh = r.Diff, r.Diff
		if r.Diff == 0 {
			r.T, r.P = 0, 1
		} else {
			r.T, r.P = math.Copysign(math.Inf(1), r.Diff), 0
		}
		return r
	}
	r.T = r.Diff / r.SE
	r.DF = (va + vb) * (va + vb) / (va*va/float64(len(a)-1) + vb*vb/float64(len(b)-1))
	r.P = studentTwoSidedP(r.T, r.DF)
	h := StudentTQuantile(1-(1-level)/2, r.DF) * r.SE
	r.CILow, r.CIHigh = r.Diff-h, r.Diff+h
	return r
}

// CohenD is the standardised mean difference (mean(a) - mean(b)) / s_pooled
// with s_pooled² = ((na-1)·var(a) + (nb-1)·var(b)) / (na+nb-2). NaN when a
// sample has fewer than two values or the pooled deviation is zero.
func CohenD(a, b []float64) float64 {
	na, nb := float64(len(a)), float64(len(b))
	if len(a) < 2 || len(b) < 2 {
		return math.NaN()
	}
	sp := math.Sqrt(((na-1)*Variance(a) + (nb-1)*Variance(b)) / (na + nb - 2))
	if sp == 0 {
		return math.NaN()
	}
	return (Mean(a) - Mean(b)) / sp
}

// HedgesG is Cohen's d corrected for small-sample bias with Hedges' exact
// factor J(m) = Γ(m/2) / (√(m/2) · Γ((m-1)/2)), m = na+nb-2 (≈ 1 - 3/(4m-1)).
func HedgesG(a, b []float64) float64 {
	d := CohenD(a, b)
	m := float64(len(a) + len(b) - 2)
	if math.IsNaN(d) || m < 2 {
		return math.NaN()
	}
	l1, _ := math.Lgamma(m / 2)
	l2, _ := math.Lgamma((m - 1) / 2)
	return d * math.Exp(l1-l2) / math.Sqrt(m/2)
}

// LinearFit fits y = Intercept + Slope·x by ordinary least squares. ok is
// false for fewer than two points or when every x is the same.
func LinearFit(x, y []float64) (slope, intercept float64, ok bool) {
	if len(x) != len(y) || len(x) < 2 {
		return math.NaN(), math.NaN(), false
	}
	mx, my := Mean(x), Mean(y)
	var sxy, sxx float64
	for i := range x {
		dx := x[i] - mx
		sxy += dx * (y[i] - my)
		sxx += dx * dx
	}
	if sxx == 0 {
		return math.NaN(), math.NaN(), false
	}
	slope = sxy / sxx
	return slope, my - slope*mx, true
}

// Point is one alternative in a two-objective trade-off.
type Point struct {
	X, Y float64
}

// ParetoFront returns the indices of the points no other point dominates
// when X is to be maximised and Y minimised (e.g. throughput against energy
// per event), ordered by increasing X. A point dominates another when it is
// at least as good in both objectives and better in one; points with a NaN
// coordinate are never on the front.
func ParetoFront(pts []Point) []int {
	var front []int
	for i, p := range pts {
		if math.IsNaN(p.X) || math.IsNaN(p.Y) {
			continue
		}
		dominated := false
		for j, q := range pts {
			if j == i || math.IsNaN(q.X) || math.IsNaN(q.Y) {
				continue
			}
			if q.X >= p.X && q.Y <= p.Y && (q.X > p.X || q.Y < p.Y) {
				dominated = true
				break
			}
		}
		if !dominated {
			front = append(front, i)
		}
	}
	sort.SliceStable(front, func(i, j int) bool { return pts[front[i]].X < pts[front[j]].X })
	return front
}

// Holm adjusts p-values for testing them together (Holm–Bonferroni,
// step-down): comparing many groups with one baseline at level α, a
// difference counts where its adjusted p is below α, and the chance of any
// false difference stays at most α. NaN stays NaN and is not counted among
// the tests.
func Holm(p []float64) []float64 {
	type iv struct {
		i int
		p float64
	}
	var valid []iv
	out := make([]float64, len(p))
	for i, v := range p {
		out[i] = math.NaN()
		if !math.IsNaN(v) {
			valid = append(valid, iv{i, v})
		}
	}
	slices.SortStableFunc(valid, func(a, b iv) int { return cmp.Compare(a.p, b.p) })
	m := len(valid)
	running := 0.0
	for k, x := range valid {
		adj := math.Min(1, float64(m-k)*x.p)
		running = math.Max(running, adj) // adjusted p-values never decrease
		out[x.i] = running
	}
	return out
}
