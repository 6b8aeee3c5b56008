package chaos_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/loadtest/chaos"
)

func planOpts(kills int) chaos.PlanOptions {
	return chaos.PlanOptions{Segment: chaos.FaultServices, Targets: chaos.Services, Kills: kills, Configs: []string{"500", "2000"},
		Phases:     chaos.PhaseLengths{Baseline: 2 * time.Second, Warmup: 2 * time.Second, Measure: 8 * time.Second, Cooldown: time.Second},
		RestartMin: 500 * time.Millisecond, RestartMax: 3 * time.Second, FirstSlot: 1}
}

func TestPlanFullCrossProductCoversEveryServiceInEveryPhase(t *testing.T) {
	kills, err := chaos.Plan(rand.New(rand.NewPCG(7, 7)), planOpts(0))
	require.NoError(t, err)
	require.Len(t, kills, len(chaos.Services)*len(chaos.Phases))
	seen := map[[2]string]bool{}
	for i, k := range kills {
		require.Equal(t, i+1, k.Slot)
		require.False(t, seen[[2]string{k.Target, k.Phase}], "pair %s/%s twice", k.Target, k.Phase)
		seen[[2]string{k.Target, k.Phase}] = true
		require.GreaterOrEqual(t, k.RestartAfter, 500*time.Millisecond)
		require.LessOrEqual(t, k.RestartAfter, 3*time.Second)
	}
	require.Empty(t, chaos.CoverageOf(kills, nil).Missing())
}

func TestPlanFewerKillsStillCoverEveryPhaseAndBalanceServices(t *testing.T) {
	for _, n := range []int{7, 20, 21, 34} {
		for seed := uint64(0); seed < 20; seed++ {
			kills, err := chaos.Plan(rand.New(rand.NewPCG(seed, 1)), planOpts(n))
			require.NoError(t, err)
			require.Len(t, kills, n)
			c := chaos.CoverageOf(kills, nil)
			require.Empty(t, c.Missing(), "n=%d seed=%d: %s", n, seed, c)
			for _, s := range chaos.Services {
				require.InDelta(t, float64(n)/float64(len(chaos.Services)), c.ByTarget[s], 1, "n=%d seed=%d: %s", n, seed, c)
			}
		}
	}
}

func TestPlanIsReproducibleFromTheSeed(t *testing.T) {
	a, err := chaos.Plan(rand.New(rand.NewPCG(42, 1)), planOpts(20))
	require.NoError(t, err)
	b, err := chaos.Plan(rand.New(rand.NewPCG(42, 1)), planOpts(20))
	require.NoError(t, err)
	require.Equal(t, a, b)
	c, err := chaos.Plan(rand.New(rand.NewPCG(43, 1)), planOpts(20))
	require.NoError(t, err)
	require.NotEqual(t, a, c)
}

func TestPlanPlacesKillsInsideTimedPhasesAndAtOnceInTheOthers(t *testing.T) {
	o := planOpts(0)
	kills, err := chaos.Plan(rand.New(rand.NewPCG(3, 3)), o)
	require.NoError(t, err)
	for _, k := range kills {
		switch k.Phase {
		case "baseline", "warmup":
			require.Less(t, k.Offset, 2*time.Second, k.String())
			require.Positive(t, k.Offset, k.String())
		case "measuring":
			require.Less(t, k.Offset, 8*time.Second, k.String())
		case "provisioning", "teardown", "analyzing":
			require.Zero(t, k.Offset, k.String())
		}
	}
}

func TestPlanRejectsBadOptions(t *testing.T) {
	o := planOpts(-1)
	_, err := chaos.Plan(rand.New(rand.NewPCG(1, 1)), o)
	require.ErrorContains(t, err, "kills")
	o = planOpts(3)
	o.Targets = nil
	_, err = chaos.Plan(rand.New(rand.NewPCG(1, 1)), o)
	require.ErrorContains(t, err, "target")
	o = planOpts(3)
	o.RestartMin, o.RestartMax = 2*time.Second, time.Second
	_, err = chaos.Plan(rand.New(rand.NewPCG(1, 1)), o)
	require.ErrorContains(t, err, "restart")
}

func TestPlanInsertsControlSlots(t *testing.T) {
	o := planOpts(10)
	o.ControlEvery = 5
	kills, err := chaos.Plan(rand.New(rand.NewPCG(5, 5)), o)
	require.NoError(t, err)
	require.Len(t, kills, 12)
	for i, k := range kills {
		require.Equal(t, i+1, k.Slot)
		require.Equal(t, i == 5 || i == 11, k.Target == chaos.TargetNone, "slot %d: %s", k.Slot, k)
	}
	c := chaos.CoverageOf(kills, nil)
	require.NotContains(t, c.ByTarget, chaos.TargetNone)
}

func TestPlanFollowsAFixedSchedule(t *testing.T) {
	sched, err := chaos.ParseSchedule("provisioner:measuring, scheduler:warmup")
	require.NoError(t, err)
	o := planOpts(0)
	o.Schedule = sched
	kills, err := chaos.Plan(rand.New(rand.NewPCG(1, 2)), o)
	require.NoError(t, err)
	require.Len(t, kills, 2)
	require.Equal(t, "provisioner", kills[0].Target)
	require.Equal(t, "measuring", kills[0].Phase)
	require.Equal(t, "scheduler", kills[1].Target)
	require.Equal(t, "warmup", kills[1].Phase)

	_, err = chaos.ParseSchedule("provisioner:lunch")
	require.ErrorContains(t, err, "provisioner:lunch")
	o.Schedule = []chaos.Pair{{Target: "nats", Phase: "measuring"}}
	_, err = chaos.Plan(rand.New(rand.NewPCG(1, 2)), o)
	require.ErrorContains(t, err, "nats:measuring")
}
