package cli

import (
	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/report"
)

// The comparison's statistics are pkg/compare's, shared with the web
// console; the CLI adds its formats (table, CSV, JSON) and its plot.
type (
	Group     = compare.Group
	GroupStat = compare.GroupStat
)

// Compared is a comparison with the CLI's renderings (Write, Plot).
type Compared struct{ compare.Compared }

// MatchSides builds the comparisons of the arguments' groups
// (compare.MatchSides).
func MatchSides(sides [][]Group) Compared { return Compared{compare.MatchSides(sides)} }

// NewGroup collects the metrics of rows under label.
func NewGroup(label string, rows []report.ResultRow) Group {
	runs := make([]compare.Run, len(rows))
	for i, r := range rows {
		runs[i] = compare.Run{RunID: r.RunID, ConfigHash: r.ConfigHash, Factors: r.Factors, Metrics: r.Metrics}
	}
	return compare.NewGroup(label, runs)
}
