package cli

import "github.com/greenflow/greenflow/pkg/runcharts"

// A run's charts and the helpers they share are pkg/runcharts', shared with
// the web console's run page.
var (
	powerPlot      = runcharts.Power
	lagPlot        = runcharts.Lag
	splitByScale   = runcharts.SplitByScale
	componentsNote = runcharts.ComponentsNote
	runSpan        = runcharts.Span
	nodesOf        = runcharts.Nodes
	rolesOf        = runcharts.Roles
	shortRun       = runcharts.ShortRun
	factors        = runcharts.Factors
)
