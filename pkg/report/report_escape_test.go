package report_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// Strings from a spec — the experiment's name and labels, factor values —
// and a run's reason reach the HTML report escaped: markup in them shows
// as text and never runs (a report is opened in a browser, maybe by
// someone other than whoever wrote the spec).
func TestReportEscapesSpecStrings(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	const mark = `<script>alert("gf")</script>`
	spec := `{"metadata":{"name":"x","labels":{"team":"` + strings.ReplaceAll(mark, `"`, `\"`) + `"}}}`
	require.NoError(t, st.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e-esc", Name: "esc " + mark, Spec: spec,
		Labels: `{"team":"` + strings.ReplaceAll(mark, `"`, `\"`) + `"}`, State: events.ExperimentStateDone, RunsTotal: 2, CreatedMs: 1}))
	require.NoError(t, st.UpsertRuns(ctx, []store.Run{
		{ExperimentID: "e-esc", RunID: "e-esc-r0000", ConfigHash: "c1", Factors: `{"workload.label":"` + strings.ReplaceAll(mark, `"`, `\"`) + `"}`,
			State: events.RunStateDone, Phases: "[]", MeasureStartMs: 1000, MeasureEndMs: 2000, CreatedMs: 1},
		{ExperimentID: "e-esc", RunID: "e-esc-r0001", ConfigHash: "c2", Factors: `{"workload.label":"b"}`,
			State: events.RunStateFailed, Reason: "failed: " + mark, Phases: "[]", MeasureStartMs: 3000, MeasureEndMs: 4000, CreatedMs: 2},
	}))
	page, err := report.Report(ctx, st, "e-esc", 10)
	require.NoError(t, err)
	html := string(page)
	require.NotContains(t, html, "<script>", "markup from the spec is never emitted as markup")
	require.Contains(t, html, "esc &lt;script&gt;", "the name shows as text")
	require.Contains(t, html, "label=&lt;script&gt;alert(&#34;gf&#34;)&lt;/script&gt;", "the factor value shows as text")
	require.Contains(t, html, "failed: &lt;script&gt;", "the reason shows as text")
}
