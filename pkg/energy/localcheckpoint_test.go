package energy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// A local source restored from a checkpoint — a collector restarted on the
// same node — reads exactly what the source that took the checkpoint reads
// next: the node's counters and CPU times continue, the kept processes'
// CPU time too, and a process started since counts whole; a process left
// out of the checkpoint starts from a baseline.
func TestLocalSourceCheckpointContinuesExactly(t *testing.T) {
	for _, tt := range []struct {
		name  string
		meter func(t *testing.T, powercap, proc string) energy.NodeMeter
	}{
		{"rapl", func(t *testing.T, powercap, proc string) energy.NodeMeter {
			m, err := energy.NewRAPLMeter(powercap, proc)
			require.NoError(t, err)
			return m
		}},
		{"model", func(_ *testing.T, _, proc string) energy.NodeMeter { return energy.NewModelMeter(proc, 10, 110) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pc, _ := raplFixture(t, "two-packages")
			f := &fakeProc{root: t.TempDir(), busy: 1000, total: 10000}
			writeFile(t, f.root, "sys/kernel/random/boot_id", "0b5e4c1d-0000-4000-8000-000000000001\n")
			procs := []fakeProcess{
				{pid: 1, ppid: 0, ticks: 50, start: 1},
				{pid: 100, ppid: 1, ticks: 300, start: 500}, // the target
				{pid: 101, ppid: 100, ticks: 200, start: 600},
				{pid: 200, ppid: 1, ticks: 400, start: 700}, // not kept
			}
			f.write(t, procs)
			ctx := context.Background()
			a := energy.NewLocalSource(tt.meter(t, pc, f.root), f.root)
			_, err := a.Read(ctx, t0)
			require.NoError(t, err)
			f.busy, f.total = 3000, 14000
			procs[1].ticks, procs[2].ticks, procs[3].ticks = 400, 260, 700
			f.write(t, procs)
			setUJ(t, pc, "intel-rapl:0", 100_000_000+4_000_000)
			_, err = a.Read(ctx, t0.Add(time.Second))
			require.NoError(t, err)
			cp, err := a.Checkpoint(func(k string) bool { return k == "pid/100" || k == "pid/101" })
			require.NoError(t, err)

			// The collector dies; the node goes on for 5 s; pid 300 starts.
			f.busy, f.total = 9000, 34000
			procs[1].ticks, procs[2].ticks, procs[3].ticks = 900, 460, 1000
			procs = append(procs, fakeProcess{pid: 300, ppid: 1, ticks: 250, start: 800})
			f.write(t, procs)
			setUJ(t, pc, "intel-rapl:0", 100_000_000+4_000_000+25_000_000)
			setUJ(t, pc, "intel-rapl:0/intel-rapl:0:1", 5_000_000+3_000_000)

			b := energy.NewLocalSource(tt.meter(t, pc, f.root), f.root)
			require.NoError(t, b.Restore(cp))
			want, err := a.Read(ctx, t0.Add(6*time.Second))
			require.NoError(t, err)
			got, err := b.Read(ctx, t0.Add(6*time.Second))
			require.NoError(t, err)
			require.Equal(t, 5*time.Second, got.Interval)
			require.Equal(t, want.NodeReading, got.NodeReading, "the node's interval is the one the first source reads")
			if tt.name == "rapl" {
				require.InDelta(t, 28, got.TotalDeltaJ, 1e-9, "25 J package + 3 J dram")
			} else {
				require.InDelta(t, 5*10+100*6000.0/20000*5, got.TotalDeltaJ, 1e-9, "5 s at 10 W + 100 W × 30%")
			}
			wantW, gotW := workloadValues(want), workloadValues(got)
			require.Equal(t, wantW["pid/100"], gotW["pid/100"])
			require.InDelta(t, 5, gotW["pid/100"], 1e-9)
			require.InDelta(t, 2, gotW["pid/101"], 1e-9)
			require.InDelta(t, 2.5, gotW["pid/300"], 1e-9, "started after the checkpoint: all its time")
			require.InDelta(t, 3, wantW["pid/200"], 1e-9)
			require.Zero(t, gotW["pid/200"], "left out of the checkpoint: a baseline")

			// From then on both read alike.
			procs[3].ticks = 1100
			f.write(t, procs)
			want, err = a.Read(ctx, t0.Add(7*time.Second))
			require.NoError(t, err)
			got, err = b.Read(ctx, t0.Add(7*time.Second))
			require.NoError(t, err)
			require.Equal(t, workloadValues(want), workloadValues(got))
		})
	}
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
	require.Error(t, fresh(pc).Restore([]byte("{")))
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
