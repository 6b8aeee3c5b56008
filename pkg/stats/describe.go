package stats

import (
	"math"
	"sort"
)

// Mean is the arithmetic mean; NaN for no values.
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Variance is the sample variance (divisor n-1), computed in two passes;
// NaN for fewer than two values.
func Variance(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	m := Mean(xs)
	var ss, c float64
	for _, x := range xs {
		d := x - m
		ss += d * d
		c += d
	}
	// c corrects the rounding of m (Chan, Golub & LeVeque's corrected
	// two-pass algorithm).
	return (ss - c*c/float64(len(xs))) / float64(len(xs)-1)
}

// StdDev is the sample standard deviation; NaN for fewer than two values.
func StdDev(xs []float64) float64 { return math.Sqrt(Variance(xs)) }

// CV is the coefficient of variation, sample standard deviation over the
// absolute mean (a fraction: 0.1 is 10 %); NaN for fewer than two values or
// a zero mean.
func CV(xs []float64) float64 {
	m := Mean(xs)
	if m == 0 {
		return math.NaN()
	}
	return StdDev(xs) / math.Abs(m)
}

// Median is the middle value (the mean of the two middle values for an even
// count); NaN for no values. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Summary describes repeated measurements of one quantity.
type Summary struct {
	N      int
	Mean   float64
	SD     float64 // sample standard deviation; NaN when N < 2
	CV     float64 // SD / |Mean|; NaN when N < 2 or Mean = 0
	Median float64
	Min    float64
	Max    float64
	// Level is the confidence level of [CILow, CIHigh] (e.g. 0.95);
	// HalfWidth = t(1-(1-Level)/2, N-1) · SD / √N, NaN when N < 2.
	Level     float64
	HalfWidth float64
	CILow     float64
	CIHigh    float64
}

// Describe summarises xs with a Student-t confidence interval for the mean
// at the given level (0 < level < 1).
func Describe(xs []float64, level float64) Summary {
	s := Summary{N: len(xs), Mean: Mean(xs), SD: StdDev(xs), CV: CV(xs), Median: Median(xs), Level: level,
		Min: math.NaN(), Max: math.NaN(), HalfWidth: math.NaN(), CILow: math.NaN(), CIHigh: math.NaN()}
	for i, x := range xs {
		if i == 0 || x < s.Min {
			s.Min = x
		}
		if i == 0 || x > s.Max {
			s.Max = x
		}
	}
	if s.N >= 2 && level > 0 && level < 1 {
		s.HalfWidth = StudentTQuantile(1-(1-level)/2, float64(s.N-1)) * s.SD / math.Sqrt(float64(s.N))
		s.CILow, s.CIHigh = s.Mean-s.HalfWidth, s.Mean+s.HalfWidth
	}
	return s
}
