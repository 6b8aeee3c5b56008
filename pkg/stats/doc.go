// Package stats is the statistics GreenFlow's analysis needs, written on the
// standard library only: descriptive summaries of repetitions (mean, sample
// standard deviation, coefficient of variation, Student-t confidence
// intervals), Welch's unequal-variance t-test with Cohen's d and Hedges' g,
// least-squares line fits (Theodolite's lag-trend SLO) and Pareto fronts.
//
// The Student t distribution is computed from the regularized incomplete
// beta function (continued fraction, modified Lentz), so CDF values are
// accurate to about 1e-12; quantiles start from the Cornish–Fisher expansion
// around the normal quantile and are refined by safeguarded Newton steps on
// that CDF, so they are exact to the same precision for every degree of
// freedom, integer or not (Welch–Satterthwaite degrees of freedom are not).
//
// Functions return NaN where a statistic is undefined (the standard deviation
// of one value, a test with fewer than two values per group); callers decide
// how to show that.
package stats
