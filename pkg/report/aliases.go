package report

import (
	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

// The report's charts are pkg/svgplot's and pkg/runcharts', its
// statistics pkg/compare's.
type (
	plot    = svgplot.Plot
	series  = svgplot.Series
	band    = svgplot.Band
	catTick = svgplot.CatTick
)

var (
	noNegZero      = svgplot.NoNegZero
	powerPlot      = runcharts.Power
	lagPlot        = runcharts.Lag
	splitByScale   = runcharts.SplitByScale
	componentsNote = runcharts.ComponentsNote
	runSpan        = runcharts.Span
	nodesOf        = runcharts.Nodes
	rolesOf        = runcharts.Roles
	shortRun       = runcharts.ShortRun
	factors        = runcharts.Factors
	crossesZero    = compare.CrossesZero
)
