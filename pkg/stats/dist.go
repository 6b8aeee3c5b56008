package stats

import "math"

// RegIncBeta is the regularized incomplete beta function I_x(a, b) for
// a, b > 0 and 0 <= x <= 1; NaN outside that domain.
func RegIncBeta(x, a, b float64) float64 {
	switch {
	case math.IsNaN(x) || math.IsNaN(a) || math.IsNaN(b) || a <= 0 || b <= 0 || x < 0 || x > 1:
		return math.NaN()
	case x == 0:
		return 0
	case x == 1:
		return 1
	}
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	front := math.Exp(lab - la - lb + a*math.Log(x) + b*math.Log1p(-x))
	// The continued fraction converges fast for x < (a+1)/(a+b+2); use the
	// symmetry I_x(a,b) = 1 - I_{1-x}(b,a) on the other side.
	if x < (a+1)/(a+b+2) {
		return front * betaCF(x, a, b) / a
	}
	return 1 - front*betaCF(1-x, b, a)/b
}

// betaCF evaluates the continued fraction of the incomplete beta function by
// the modified Lentz method (Numerical Recipes §6.4).
func betaCF(x, a, b float64) float64 {
	const (
		maxIter = 500
		eps     = 1e-16
		tiny    = 1e-300
	)
	qab, qap, qam := a+b, a+1, a-1
	nonZero := func(v float64) float64 {
		if math.Abs(v) < tiny {
			return tiny
		}
		return v
	}
	c, d := 1.0, 1/nonZero(1-qab*x/qap)
	h := d
	// step applies one term aa of the fraction and returns the factor it
	// multiplies h by.
	step := func(aa float64) float64 {
		d = 1 / nonZero(1+aa*d)
		c = nonZero(1 + aa/c)
		return d * c
	}
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		m2 := 2 * fm
		h *= step(fm * (b - fm) * x / ((qam + m2) * (a + m2)))
		del := step(-(a + fm) * (qab + fm) * x / ((a + m2) * (qap + m2)))
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return h
}

// StudentTCDF is P(T <= t) for Student's t distribution with df > 0 degrees
// of freedom (df need not be an integer).
func StudentTCDF(t, df float64) float64 {
	if math.IsNaN(t) || math.IsNaN(df) || df <= 0 {
		return math.NaN()
	}
	if math.IsInf(t, 0) {
		if t > 0 {
			return 1
		}
		return 0
	}
	// Two-sided tail mass beyond |t|: I_{df/(df+t²)}(df/2, 1/2).
	tail := studentTwoSidedP(t, df)
	if t > 0 {
		return 1 - tail/2
	}
	return tail / 2
}

// studentTwoSidedP is P(|T| >= |t|), computed without cancellation.
func studentTwoSidedP(t, df float64) float64 {
	t2 := t * t
	if t2 < df {
		// Same value by I_x(a,b) = 1 - I_{1-x}(b,a); passing t²/(df+t²)
		// instead of 1 - df/(df+t²) keeps its precision for small |t|.
		return 1 - RegIncBeta(t2/(df+t2), 0.5, df/2)
	}
	return RegIncBeta(df/(df+t2), df/2, 0.5)
}

// StudentTPDF is the density of Student's t distribution with df degrees of
// freedom at t.
func StudentTPDF(t, df float64) float64 {
	if math.IsNaN(t) || math.IsNaN(df) || df <= 0 {
		return math.NaN()
	}
	l1, _ := math.Lgamma((df + 1) / 2)
	l2, _ := math.Lgamma(df / 2)
	return math.Exp(l1-l2-0.5*math.Log(df*math.Pi)) * math.Pow(1+t*t/df, -(df+1)/2)
}

// NormalQuantile is the standard normal quantile function.
func NormalQuantile(p float64) float64 {
	if math.IsNaN(p) || p < 0 || p > 1 {
		return math.NaN()
	}
	return math.Sqrt2 * math.Erfinv(2*p-1)
}

// StudentTQuantile is the p-quantile of Student's t distribution with df > 0
// degrees of freedom: the t with StudentTCDF(t, df) = p. For a two-sided 95 %
// interval use p = 0.975.
func StudentTQuantile(p, df float64) float64 {
	switch {
	case math.IsNaN(p) || math.IsNaN(df) || df <= 0 || p < 0 || p > 1:
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	case p == 0.5:
		return 0
	case p < 0.5:
		return -StudentTQuantile(1-p, df)
	case df == 1: // Cauchy
		return math.Tan(math.Pi * (p - 0.5))
	case df == 2:
		return (2*p - 1) / math.Sqrt(2*p*(1-p))
	case math.IsInf(df, 1):
		return NormalQuantile(p)
	}
	// Cornish–Fisher expansion (Abramowitz & Stegun 26.7.5) as the start.
	z := NormalQuantile(p)
	z2 := z * z
	g1 := (z2 + 1) * z / 4
	g2 := ((5*z2+16)*z2 + 3) * z / 96
	g3 := (((3*z2+19)*z2+17)*z2 - 15) * z / 384
	g4 := ((((79*z2+776)*z2+1482)*z2-1920)*z2 - 945) * z / 92160
	t := z + g1/df + g2/(df*df) + g3/(df*df*df) + g4/(df*df*df*df)
	if !(t > 0) || math.IsInf(t, 0) {
		t = z
	}
	// Bracket the root, then Newton steps that fall back to bisection when
	// they leave the bracket (heavy tails make plain Newton overshoot).
	lo, hi := 0.0, math.Max(t, 1)
	for StudentTCDF(hi, df) < p {
		lo = hi
		hi *= 2
		if hi > 1e300 {
			return math.Inf(1)
		}
	}
	for i := 0; i < 200; i++ {
		f := StudentTCDF(t, df) - p
		if f == 0 {
			return t
		}
		if f < 0 {
			lo = t
		} else {
			hi = t
		}
		next := t - f/StudentTPDF(t, df)
		if !(next > lo && next < hi) {
			next = (lo + hi) / 2
		}
		if math.Abs(next-t) <= 1e-14*math.Max(1, math.Abs(t)) {
			return next
		}
		t = next
	}
	return t
}
