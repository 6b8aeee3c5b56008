package stats

import (
	"math"
	"sort"
)

// SlopeFit is a line's slope with a confidence interval for it.
type SlopeFit struct {
	Slope float64
	// Low and High bound the slope at Level (two-sided); ±Inf where the
	// points are too few to bound it on that side at that level.
	Low, High, Level float64
	// Pairs is the number of pairwise slopes the estimate is the median of.
	Pairs int
}

// Contains reports whether v lies within the interval.
func (f SlopeFit) Contains(v float64) bool { return f.Low <= v && v <= f.High }

// TheilSen fits the slope of y on x as the median of the slopes of every
// pair of points with distinct x (Theil 1950, Sen 1968), with Sen's
// distribution-free confidence interval: the order statistics of those
// slopes at ranks (N − C)/2 and (N + C)/2 + 1, C = z·sqrt(Var S) where S is
// Kendall's statistic, Var S = n(n−1)(2n+5)/18 (normal approximation, no
// ties in x), rounded outwards.
//
// Why not least squares: a consumer lag read from committed offsets is a
// flat or sloped line plus upward spikes of a commit interval's load when a
// commit comes late. Two spikes in eleven samples move a least-squares slope
// by thousands of msg/s and inflate its standard error to several times a
// 2000 msg/s threshold; the median of pairwise slopes ignores up to ~29 % of
// such outliers and its interval stays tight where the rest of the series is.
// The interval assumes independent residuals; a sawtooth's are not, so it is
// a resolution check, not a calibrated probability.
//
// ok is false under two points or when every x is the same.
func TheilSen(x, y []float64, level float64) (SlopeFit, bool) {
	f := SlopeFit{Slope: math.NaN(), Low: math.Inf(-1), High: math.Inf(1), Level: level}
	if len(x) != len(y) || len(x) < 2 {
		return f, false
	}
	slopes := make([]float64, 0, len(x)*(len(x)-1)/2)
	for i := range x {
		for j := i + 1; j < len(x); j++ {
			if dx := x[j] - x[i]; dx != 0 {
				slopes = append(slopes, (y[j]-y[i])/dx)
			}
		}
	}
	if len(slopes) == 0 {
		return f, false
	}
	sort.Float64s(slopes)
	f.Slope, f.Pairs = Median(slopes), len(slopes)
	n, N := float64(len(x)), float64(len(slopes))
	c := NormalQuantile((1+level)/2) * math.Sqrt(n*(n-1)*(2*n+5)/18)
	// 1-based ranks, rounded outwards so the interval is never narrower
	// than the level asks.
	if lo := math.Floor((N - c) / 2); lo >= 1 {
		f.Low = slopes[int(lo)-1]
	}
	if hi := math.Ceil((N+c)/2) + 1; hi <= N {
		f.High = slopes[int(hi)-1]
	}
	return f, true
}
