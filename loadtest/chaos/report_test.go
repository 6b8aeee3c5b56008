package chaos_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/pkg/spec"
)

func TestBuildSpecIsAValidExperimentOfTheExample(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	example := filepath.Join(filepath.Dir(file), "..", "..", "examples", "uc3-local.yaml")
	text, err := chaos.BuildSpec(example, chaos.SpecOptions{Name: "chaos-s07", Sensors: []string{"500", "2000"}, Repetitions: 3,
		Phases:   chaos.PhaseLengths{Baseline: 2 * time.Second, Warmup: 2 * time.Second, Measure: 8 * time.Second, Cooldown: time.Second},
		Interval: 250 * time.Millisecond})
	require.NoError(t, err)
	p, err := spec.Prepare([]byte(text), nil, false)
	require.NoError(t, err)
	require.Equal(t, 6, p.Runs)
	s := p.Experiment.Spec
	require.Equal(t, "chaos-s07", p.Experiment.Metadata.Name)
	require.Equal(t, 8*time.Second, s.Phases.Measure.Duration)
	require.Equal(t, time.Second, s.Phases.Cooldown.Duration)
	require.Equal(t, 250*time.Millisecond, s.Meters.Sample.Duration)
	require.Equal(t, "uc3-go", s.SUT.Template, "the example's SUT is kept")
	require.Equal(t, "local", s.SUT.Backend)
}

func TestSummaryTableFilesKillsByTheObservedPhase(t *testing.T) {
	kill := func(slot int, target, planned, observed, outcome string, delivered bool) chaos.KillRecord {
		return chaos.KillRecord{Kill: chaos.Kill{Slot: slot, Target: target, Phase: planned}, PhaseObserved: observed, Delivered: delivered,
			Outcome: outcome, CPUPressure: -1}
	}
	rep := &chaos.Report{Seed: 9, Segments: []chaos.Segment{{Name: chaos.FaultServices, Kills: []chaos.KillRecord{
		kill(1, "provisioner", "measuring", "measuring", chaos.OutViolation, true),
		kill(2, "provisioner", "cooldown", "teardown", chaos.OutDone, true),
		kill(3, "scheduler", "analyzing", "", chaos.OutFailedRetried, false),
		kill(4, chaos.TargetNone, "-", "", chaos.OutDone, false),
		kill(5, "provisioner", "measuring", "measuring", chaos.OutDoneFlagged, true),
	}}}}
	targets, cells := chaos.Table(rep.Segments[0].Kills)
	require.Equal(t, []string{"none", "provisioner", "scheduler"}, targets)
	require.Equal(t, "DF V", cells["provisioner"]["measuring"].String())
	require.Equal(t, "D", cells["provisioner"]["teardown"].String())
	require.Equal(t, "FR", cells["scheduler"]["not-killed"].String())
	require.Equal(t, "D", cells["none"]["control"].String())
	var b strings.Builder
	chaos.PrintSummary(&b, rep)
	require.Contains(t, b.String(), "seed 9")
	require.Contains(t, b.String(), "controls (no kill): done 1")

	dir := t.TempDir()
	require.NoError(t, chaos.WriteReport(dir, rep))
	for _, f := range []string{"report.json", "summary.txt", "kills.csv", "runs.csv", "table.csv"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Positive(t, st.Size(), f)
	}
	table, err := os.ReadFile(filepath.Join(dir, "table.csv"))
	require.NoError(t, err)
	require.Contains(t, string(table), "services,provisioner,measuring,violation,1")
}
