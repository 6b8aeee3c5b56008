package energy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// What the contract suite leaves to LocalSource's checkpoint: a process
// that started after the checkpoint was taken (pid 300) counts with all its
// CPU time in the restored source's first interval — it is new, not one
// left out of the checkpoint (pid 200), which starts from a baseline.
func TestLocalSourceRestoredCountsNewProcessesWhole(t *testing.T) {
	f := &fakeProc{root: t.TempDir(), busy: 1000, total: 10000}
	procs := []fakeProcess{
		{pid: 1, ppid: 0, ticks: 50, start: 1},
		{pid: 100, ppid: 1, ticks: 300, start: 500}, // the target
		{pid: 200, ppid: 1, ticks: 400, start: 700}, // not kept
	}
	f.write(t, procs)
	ctx := context.Background()
	a := energy.NewLocalSource(energy.NewModelMeter(f.root, 10, 110), f.root)
	_, err := a.Read(ctx, t0)
	require.NoError(t, err)
	cp, err := a.Checkpoint(func(k string) bool { return k == "pid/100" })
	require.NoError(t, err)

	// The collector dies; the node goes on for 5 s; pid 300 starts.
	f.busy, f.total = 7000, 30000
	procs[1].ticks, procs[2].ticks = 800, 700
	procs = append(procs, fakeProcess{pid: 300, ppid: 1, ticks: 250, start: 800})
	f.write(t, procs)
	b := energy.NewLocalSource(energy.NewModelMeter(f.root, 10, 110), f.root)
	require.NoError(t, b.Restore(cp))
	got, err := b.Read(ctx, t0.Add(5*time.Second))
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, got.Interval)
	require.InDelta(t, 5*10+100*6000.0/20000*5, got.TotalDeltaJ, 1e-9, "5 s at 10 W + 100 W × 30%")
	w := workloadValues(got)
	require.InDelta(t, 5, w["pid/100"], 1e-9)
	require.InDelta(t, 2.5, w["pid/300"], 1e-9, "started after the checkpoint: all its time")
	require.Zero(t, w["pid/200"], "left out of the checkpoint: a baseline")
}

// A checkpoint is refused — the state left as it was — when the node
// rebooted since, when the meter differs, and when it is unreadable.
func TestLocalSourceRestoreRefusals(t *testing.T) {
	pc, proc := raplFixture(t, "two-packages")
	writeFile(t, proc, "sys/kernel/random/boot_id", "boot-1\n")
	m, err := energy.NewRAPLMeter(pc, proc)
	require.NoError(t, err)
	a := energy.NewLocalSource(m, proc)
	_, err = a.Checkpoint(nil)
	require.ErrorContains(t, err, "no reading yet")
	_, err = a.Read(context.Background(), t0)
	require.NoError(t, err)
	cp, err := a.Checkpoint(nil)
	require.NoError(t, err)

	fresh := func(powercap string) *energy.LocalSource {
		m, err := energy.NewRAPLMeter(powercap, proc)
		require.NoError(t, err)
		return energy.NewLocalSource(m, proc)
	}
	require.NoError(t, fresh(pc).Restore(cp))
	psys, _ := raplFixture(t, "psys")
	require.ErrorContains(t, fresh(psys).Restore(cp), "zones")
	require.ErrorContains(t, energy.NewLocalSource(energy.NewModelMeter(proc, 1, 2), proc).Restore(cp), "restore model checkpoint")
	var st map[string]any
	require.NoError(t, json.Unmarshal(cp, &st))
	st["v"] = 9
	bad, _ := json.Marshal(st)
	require.ErrorContains(t, fresh(pc).Restore(bad), "version 9")

	writeFile(t, proc, "sys/kernel/random/boot_id", "boot-2\n")
	b := fresh(pc)
	require.ErrorContains(t, b.Restore(cp), "rebooted")
	r, err := b.Read(context.Background(), t0.Add(time.Second))
	require.NoError(t, err)
	require.Zero(t, r.Interval, "refused: the next reading is a baseline")
}
