package console

import (
	"net/http"
	"slices"
	"strings"

	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/events"
)

// compareView is the comparison page: greenflow compare's statistics.
type compareView struct {
	IDs       []string
	Level     float64
	Sets      []compare.CompareSet
	Rows      []compare.GroupStat
	Unmatched []compare.Group
	Note      string
}

// compareExperiments compares two or more experiments as `greenflow
// compare A B …` does (pkg/compare): like configurations matched, each
// against the first experiment that ran it.
func (c *Console) compareExperiments(w http.ResponseWriter, r *http.Request) {
	var ids []string
	for _, id := range r.URL.Query()["e"] {
		if id = strings.TrimSpace(id); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) < 2 {
		c.render(w, r, http.StatusBadRequest, "error.html", view{Title: "Compare",
			Error: "compare: expected two or more experiments (tick them in the list), got " + strings.Join(append([]string{}, ids...), ", ")})
		return
	}
	cv := compareView{IDs: ids, Level: 0.95}
	sides := make([][]compare.Group, len(ids))
	for i, id := range ids {
		res, ok := c.results(w, r, id)
		if !ok {
			return
		}
		if res.ConfidenceLevel > 0 {
			cv.Level = res.ConfidenceLevel
		}
		// Done runs only, one group a configuration, as the CLI does.
		byConfig := map[string][]compare.Run{}
		var order []string
		for _, run := range res.Runs {
			if run.State != events.RunStateDone {
				continue
			}
			if _, ok := byConfig[run.ConfigHash]; !ok {
				order = append(order, run.ConfigHash)
			}
			byConfig[run.ConfigHash] = append(byConfig[run.ConfigHash], compare.Run{RunID: run.RunID, ConfigHash: run.ConfigHash,
				Factors: run.Factors, Metrics: run.Metrics})
		}
		for _, h := range order {
			g := compare.NewGroup(id+": "+factorsOf(byConfig[h][0].Factors), byConfig[h])
			g.Experiment = id
			sides[i] = append(sides[i], g)
		}
	}
	cmp := compare.MatchSides(sides)
	cv.Sets, cv.Unmatched, cv.Rows = cmp.Sets, cmp.Unmatched, cmp.Stats(cv.Level)
	if len(cmp.Sets) == 0 {
		cv.Note = "No configuration was run by two of these experiments: nothing to compare."
	}
	c.render(w, r, http.StatusOK, "compare.html", view{Title: "Compare " + strings.Join(ids, " · "), Data: cv})
}
