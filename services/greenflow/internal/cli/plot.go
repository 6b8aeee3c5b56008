package cli

import "github.com/greenflow/greenflow/pkg/svgplot"

// The report's charts are pkg/svgplot's, shared with the web console.
type (
	plot    = svgplot.Plot
	series  = svgplot.Series
	band    = svgplot.Band
	catTick = svgplot.CatTick
)

var noNegZero = svgplot.NoNegZero
