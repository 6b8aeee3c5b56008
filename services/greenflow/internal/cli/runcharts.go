package cli

import "github.com/greenflow/greenflow/pkg/runcharts"

// A run's charts and the helpers they share are pkg/runcharts', shared with
// the web console's run page.
var (
	lagPlot      = runcharts.Lag
	splitByScale = runcharts.SplitByScale
	shortRun     = runcharts.ShortRun
	factors      = runcharts.Factors
)
