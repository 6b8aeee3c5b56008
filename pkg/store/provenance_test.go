package store_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestProvenance(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	meters := `{"source":"auto","model":{"idleWatts":1.48,"maxWatts":7},"interval":"500ms"}`
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "p1", Name: "cap", Spec: `{"spec":{"seed":7}}`, SpecHash: "h1",
		GreenflowVersion: "dev", GitCommit: "abc", Environment: `{"num_cpu":2,"commit_source":"checkout at run time"}`, Seed: 7}))
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{
		{ExperimentID: "p1", RunID: "p1-r0000", ConfigHash: "c2", Config: `{"meters":` + meters + `}`},
		{ExperimentID: "p1", RunID: "p1-r0001", ConfigHash: "c1", Config: `{"meters":{"source":"rapl"}}`},
		{ExperimentID: "p1", RunID: "p1-r0002", ConfigHash: "c2", Config: `{"meters":` + meters + `}`}}))
	p, err := s.Provenance(ctx, "p1")
	require.NoError(t, err)
	require.Equal(t, "h1", p.SpecHash)
	require.Equal(t, "abc", p.Commit)
	require.Empty(t, p.CommitNote)
	require.Equal(t, int64(7), p.Seed)
	require.JSONEq(t, `{"num_cpu":2,"commit_source":"checkout at run time"}`, string(p.Machine))
	require.Equal(t, "checkout at run time", p.CommitSource, "where the commit came from")
	require.Len(t, p.Meters, 2, "one per configuration")
	require.Equal(t, "c1", p.Meters[0].ConfigHash)
	require.JSONEq(t, meters, string(p.Meters[1].Requested))
	require.Equal(t, results.EffectiveMetersNote, p.Meters[1].EffectiveNote, "nothing recorded yet")
	require.Empty(t, p.Missing)

	// What the collectors applied to c2's runs: one configuration, recorded
	// for both runs, comes once.
	for _, run := range []string{"p1-r0000", "p1-r0002"} {
		require.NoError(t, s.InsertRunMeters(ctx, []store.RunMeter{{ExperimentID: "p1", RunID: run, Node: "n1", SourceID: "local", TsMs: 1,
			AskedIntervalMs: 500, IntervalMs: 500, AskedSource: "auto", Meter: "model", Estimated: true, Label: "estimated",
			Model: `{"name":"vcpu-linear","idle_w":10.7}`, Collector: "c"}}))
	}
	p, err = s.Provenance(ctx, "p1")
	require.NoError(t, err)
	require.Empty(t, p.Meters[1].EffectiveNote)
	require.JSONEq(t, `[{"node":"n1","source":"local","interval_ms":500,"meter":"model","estimated":true,"label":"estimated",
		"model":{"name":"vcpu-linear","idle_w":10.7}}]`, string(p.Meters[1].Effective))
	require.Equal(t, results.EffectiveMetersNote, p.Meters[0].EffectiveNote, "c1's runs have none recorded")
	_, err = json.Marshal(p)
	require.NoError(t, err)

	// On a testbed: the reservation the scheduler recorded is the
	// provenance's testbed, not part of the machine; one it could not read
	// is named missing.
	tb := `{"backend":"grid5000","reservation":"energy","id":"lyon/42","site":"lyon","cluster":"taurus","job_id":"42","walltime":"3h0m0s",
		"started_at":"2026-11-30T10:00:00Z","ends_at":"2026-11-30T13:00:00Z","release_by":"2026-11-30T12:45:00Z",
		"nodes":[{"host":"taurus-1.lyon.grid5000.fr","role":"control","wattmeter":true},{"host":"taurus-2.lyon.grid5000.fr","role":"sut","wattmeter":true}]}`
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "tb1", GitCommit: "abc", Environment: `{"num_cpu":2,"testbed":` + tb + `}`}))
	p, err = s.Provenance(ctx, "tb1")
	require.NoError(t, err)
	require.NotNil(t, p.Testbed)
	require.Equal(t, "lyon/42", p.Testbed.ID)
	require.Equal(t, "42", p.Testbed.JobID)
	require.Equal(t, "taurus-2.lyon.grid5000.fr", p.Testbed.Nodes[1].Host)
	require.Equal(t, "sut", p.Testbed.Nodes[1].Role)
	require.JSONEq(t, `{"num_cpu":2}`, string(p.Machine))
	require.Empty(t, p.Missing)
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "tb2", GitCommit: "abc",
		Environment: `{"num_cpu":2,"testbed_error":"open /etc/greenflow/testbed/reservation.json: no such file or directory"}`}))
	p, err = s.Provenance(ctx, "tb2")
	require.NoError(t, err)
	require.Nil(t, p.Testbed)
	require.Equal(t, []string{results.TestbedUnreadableNote + "open /etc/greenflow/testbed/reservation.json: no such file or directory)"}, p.Missing)

	// A record whose commit is unknown says why.
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "p2", GitCommit: "unknown"}))
	p, err = s.Provenance(ctx, "p2")
	require.NoError(t, err)
	require.Equal(t, "unknown", p.Commit)
	require.Equal(t, results.CommitUnknownNote, p.CommitNote)

	// Runs without a record: what they say, and what is missing.
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "p3", RunID: "p3-r0000", ConfigHash: "c", Config: `{}`}}))
	p, err = s.Provenance(ctx, "p3")
	require.NoError(t, err)
	require.NotEmpty(t, p.Missing)
	require.Len(t, p.Meters, 1)

	_, err = s.Provenance(ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)
}
