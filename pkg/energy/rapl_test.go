package energy_test

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/energy/energytest"
)

const (
	pkgRange  = 262143328850 // max_energy_range_uj of the fixture's packages and cores
	dramRange = 65712999613
)

// raplFixture copies a powercap fixture and the fake /proc into temporary
// directories the test may rewrite.
func raplFixture(tb testing.TB, name string) (powercap, proc string) {
	tb.Helper()
	return energytest.CopyTree(tb, "testdata/powercap/"+name), energytest.CopyTree(tb, "testdata/proc")
}

func zoneByName(tb testing.TB, r energy.NodeReading, zone string) energy.ZoneEnergy {
	tb.Helper()
	for _, z := range r.Zones {
		if z.Zone == zone {
			return z
		}
	}
	require.FailNow(tb, "reading has no zone "+zone)
	return energy.ZoneEnergy{}
}

func TestRAPLMeterTwoPackages(t *testing.T) {
	pc, proc := raplFixture(t, "two-packages")
	m, err := energy.NewRAPLMeter(pc, proc)
	require.NoError(t, err)

	wantZones := []string{"package-0", "package-0/core", "package-0/dram", "package-1", "package-1/core", "package-1/dram"}
	require.Equal(t, wantZones, m.Zones())
	require.Equal(t, []string{"package-0", "package-0/dram", "package-1", "package-1/dram"}, m.TotalZones())

	base, err := m.Read(t0)
	require.NoError(t, err)
	wantBase := energy.NodeReading{Time: t0, Source: energy.SourceRAPL}
	for _, z := range wantZones {
		wantBase.Zones = append(wantBase.Zones, energy.ZoneEnergy{Zone: z})
	}
	require.Equal(t, wantBase, base, "baseline reading")

	// Five seconds later: package-0 +10 J (of which core 6 J), dram-0 +2 J,
	// package-1 +20 J (core 12 J), dram-1 +3 J; 2 s busy of 8 s CPU time.
	setUJ(t, pc, "intel-rapl:0", 100_000_000+10_000_000)
	setUJ(t, pc, "intel-rapl:0/intel-rapl:0:0", 20_000_000+6_000_000)
	setUJ(t, pc, "intel-rapl:0/intel-rapl:0:1", 5_000_000+2_000_000)
	setUJ(t, pc, "intel-rapl:1", 200_000_000+20_000_000)
	setUJ(t, pc, "intel-rapl:1/intel-rapl:1:0", 30_000_000+12_000_000)
	setUJ(t, pc, "intel-rapl:1/intel-rapl:1:1", 7_000_000+3_000_000)
	writeFile(t, proc, "stat", "cpu  10200 500 3000 80600 1500 200 300 0 0 0\ncpu0 1 1 1 1\n")

	r, err := m.Read(t0.Add(5 * time.Second))
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, r.Interval)
	require.False(t, r.Estimated)
	require.InDelta(t, 35, r.TotalDeltaJ, 1e-9, "TotalDeltaJ") // 10 + 2 + 20 + 3; cores are inside their packages
	require.InDelta(t, 7, r.TotalPowerW, 1e-9, "TotalPowerW")
	require.InDelta(t, 35, r.TotalCumulativeJ, 1e-9, "TotalCumulativeJ")
	require.InDelta(t, 2, r.CPU.BusySeconds, 1e-9, "CPU.BusySeconds")
	require.InDelta(t, 8, r.CPU.TotalSeconds, 1e-9, "CPU.TotalSeconds")
	for zone, wantJ := range map[string]float64{
		"package-0": 10, "package-0/core": 6, "package-0/dram": 2,
		"package-1": 20, "package-1/core": 12, "package-1/dram": 3,
	} {
		z := zoneByName(t, r, zone)
		require.InDelta(t, wantJ, z.DeltaJ, 1e-9, zone+" DeltaJ")
		require.InDelta(t, wantJ/5, z.PowerW, 1e-9, zone+" PowerW")
		require.InDelta(t, wantJ, z.CumulativeJ, 1e-9, zone+" CumulativeJ")
	}
}

func TestRAPLMeterPsys(t *testing.T) {
	pc, proc := raplFixture(t, "psys")
	m, err := energy.NewRAPLMeter(pc, proc)
	require.NoError(t, err)

	// intel-rapl-mmio:0 duplicates package-0 and must not appear.
	wantZones := []string{"package-0", "package-0/core", "package-0/uncore", "psys"}
	require.Equal(t, wantZones, m.Zones())
	require.Equal(t, []string{"psys"}, m.TotalZones())

	_, err = m.Read(t0)
	require.NoError(t, err)
	setUJ(t, pc, "intel-rapl:0", 50_000_000+30_000_000)
	setUJ(t, pc, "intel-rapl:0:0", 10_000_000+20_000_000)
	setUJ(t, pc, "intel-rapl:0:1", 1_000_000+1_000_000)
	setUJ(t, pc, "intel-rapl:1", 90_000_000+45_000_000)
	setUJ(t, pc, "intel-rapl-mmio:0", 50_000_000+999_000_000)
	r, err := m.Read(t0.Add(3 * time.Second))
	require.NoError(t, err)
	require.InDelta(t, 45, r.TotalDeltaJ, 1e-9, "TotalDeltaJ (psys)")
	require.InDelta(t, 15, r.TotalPowerW, 1e-9, "TotalPowerW")
	require.InDelta(t, 30, zoneByName(t, r, "package-0").DeltaJ, 1e-9, "package-0 DeltaJ")
	require.InDelta(t, 1, zoneByName(t, r, "package-0/uncore").DeltaJ, 1e-9, "uncore DeltaJ")
}

// TestRAPLMeterSysClassLayout mirrors /sys/class/powercap, where every zone
// is a symlink in the root and sub-zones are also reachable inside their
// package: each zone must be found once.
func TestRAPLMeterSysClassLayout(t *testing.T) {
	nested, proc := raplFixture(t, "two-packages")
	root := t.TempDir()
	for _, rel := range []string{
		"intel-rapl:0", "intel-rapl:0/intel-rapl:0:0", "intel-rapl:0/intel-rapl:0:1",
		"intel-rapl:1", "intel-rapl:1/intel-rapl:1:0", "intel-rapl:1/intel-rapl:1:1",
	} {
		require.NoError(t, os.Symlink(filepath.Join(nested, rel), filepath.Join(root, filepath.Base(rel))))
	}
	require.NoError(t, os.Symlink(nested, filepath.Join(root, "intel-rapl")))

	m, err := energy.NewRAPLMeter(root, proc)
	require.NoError(t, err)
	require.Equal(t, []string{"package-0", "package-0/core", "package-0/dram", "package-1", "package-1/core", "package-1/dram"}, m.Zones())
	require.Equal(t, []string{"package-0", "package-0/dram", "package-1", "package-1/dram"}, m.TotalZones())
}

func TestRAPLMeterDuplicateNames(t *testing.T) {
	pc, proc := raplFixture(t, "two-packages")
	writeFile(t, pc, "intel-rapl:1/name", "package-0\n") // firmware naming both sockets alike
	m, err := energy.NewRAPLMeter(pc, proc)
	require.NoError(t, err)
	require.Equal(t, []string{
		"package-0", "package-0/core", "package-0/dram",
		"package-0@intel-rapl:1", "package-0/core@intel-rapl:1:0", "package-0/dram@intel-rapl:1:1",
	}, m.Zones())
	require.Len(t, m.TotalZones(), 4)
}

func TestNewRAPLMeterErrors(t *testing.T) {
	t.Run("root absent", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "powercap")
		_, err := energy.NewRAPLMeter(root, "testdata/proc")
		require.ErrorIs(t, err, fs.ErrNotExist)
		requireErrorMentions(t, err, root)
	})
	t.Run("no zones", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "intel-rapl/enabled", "1\n")
		_, err := energy.NewRAPLMeter(root, "testdata/proc")
		require.ErrorIs(t, err, energy.ErrNoRAPLZones)
	})
	t.Run("only core zones", func(t *testing.T) {
		root := t.TempDir()
		for _, f := range [][2]string{{"name", "core"}, {"energy_uj", "1"}, {"max_energy_range_uj", "10"}} {
			writeFile(t, root, "intel-rapl:0:0/"+f[0], f[1])
		}
		_, err := energy.NewRAPLMeter(root, "testdata/proc")
		require.ErrorIs(t, err, energy.ErrNoRAPLZones)
	})
	t.Run("energy_uj unreadable", func(t *testing.T) {
		pc, proc := raplFixture(t, "two-packages")
		// Tests run as root here, which reads a mode-000 file anyway, so an
		// unreadable counter is simulated by a directory in its place.
		path := filepath.Join(pc, "intel-rapl:0", "energy_uj")
		require.NoError(t, os.Remove(path))
		require.NoError(t, os.Mkdir(path, 0o755))
		_, err := energy.NewRAPLMeter(pc, proc)
		requireErrorMentions(t, err, "package-0", path)
	})
	t.Run("energy_uj permission denied", func(t *testing.T) {
		pc, proc := raplFixture(t, "two-packages")
		path := filepath.Join(pc, "intel-rapl:0", "energy_uj")
		require.NoError(t, os.Chmod(path, 0))
		if os.Geteuid() != 0 {
			_, err := energy.NewRAPLMeter(pc, proc)
			require.ErrorIs(t, err, fs.ErrPermission)
			requireErrorMentions(t, err, path, "root-only")
			return
		}
		// Root reads mode-000 files: check from the test binary re-run as
		// nobody (TestMain's child mode), with the fixture readable to it.
		runAsNobody(t, pc+"|"+proc+"|"+path, pc, proc)
	})
	t.Run("garbage counter", func(t *testing.T) {
		pc, proc := raplFixture(t, "psys")
		writeFile(t, pc, "intel-rapl:1/energy_uj", "lots\n")
		_, err := energy.NewRAPLMeter(pc, proc)
		requireErrorMentions(t, err, "psys", filepath.Join(pc, "intel-rapl:1", "energy_uj"))
	})
	t.Run("no /proc", func(t *testing.T) {
		pc, _ := raplFixture(t, "psys")
		_, err := energy.NewRAPLMeter(pc, t.TempDir())
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
}

func BenchmarkRAPLMeterRead(b *testing.B) {
	pc, proc := raplFixture(b, "two-packages")
	m, err := energy.NewRAPLMeter(pc, proc)
	if err != nil {
		b.Fatal(err)
	}
	now := t0
	for b.Loop() {
		now = now.Add(time.Second)
		if _, err := m.Read(now); err != nil {
			b.Fatal(err)
		}
	}
}

// runAsNobody re-runs the test binary as uid/gid 65534 in permission-child
// mode (see main_test.go); the binary and the fixture dirs are made
// reachable to that user.
func runAsNobody(t *testing.T, spec string, dirs ...string) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("greenflow-energy-test-%d", os.Getpid()))
	data, err := os.ReadFile(self)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	t.Cleanup(func() { _ = os.Remove(bin) })
	for _, d := range dirs {
		for p := d; p != "/" && p != "."; p = filepath.Dir(p) {
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				_ = os.Chmod(p, fi.Mode().Perm()|0o055)
			}
		}
		require.NoError(t, filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() {
				return os.Chmod(p, 0o755)
			}
			if fi, err := e.Info(); err == nil && fi.Mode().Perm() != 0 {
				return os.Chmod(p, 0o644)
			}
			return nil
		}))
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envPermissionChild+"="+spec)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "permission check as nobody: %s", out)
}

// The spike: package-0's counter gains 262 kJ in 10 s (26 kW on one
// package). It is not counted — with the package's power constraint
// (150 W, so 300 W plausible) and with none (the default bound) alike — it
// counts as a reset and is reported with the power it implied; the next
// interval is measured again.
func TestRAPLJumpBeyondPlausiblePowerIsNotEnergy(t *testing.T) {
	for _, tt := range []struct {
		name       string
		constraint string // package-0's constraint_0_max_power_uw, "" for none
		boundW     float64
	}{
		{"powercap constraint", "150000000", 300},
		{"no constraint", "", energy.DefaultMaxPowerW},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pc, proc := raplFixture(t, "two-packages")
			if tt.constraint != "" {
				writeFile(t, pc, "intel-rapl:0/constraint_0_max_power_uw", tt.constraint+"\n")
				writeFile(t, pc, "intel-rapl:0/constraint_1_max_power_uw", "0\n")
			}
			setUJ(t, pc, "intel-rapl:0", 1_000_000)
			m, err := energy.NewRAPLMeter(pc, proc)
			require.NoError(t, err)
			require.Equal(t, tt.boundW, m.PlausiblePowerW()["package-0"])
			_, err = m.Read(t0)
			require.NoError(t, err)

			setUJ(t, pc, "intel-rapl:0", 1_000_000+262_000_000_000)
			r, err := m.Read(t0.Add(10 * time.Second))
			require.NoError(t, err)
			require.Zero(t, zoneByName(t, r, "package-0").DeltaJ, "not counted as energy")
			require.Less(t, r.TotalDeltaJ, 1.0)
			require.Equal(t, 1, r.Resets)
			require.Len(t, r.Implausible, 1)
			imp := r.Implausible[0]
			require.Equal(t, "package-0", imp.Zone)
			require.InDelta(t, 262_000, imp.DeltaJ, 1e-6)
			require.InDelta(t, 26_200, imp.PowerW, 1e-6)
			require.Equal(t, tt.boundW, imp.BoundW)

			setUJ(t, pc, "intel-rapl:0", 1_000_000+262_000_000_000+500_000_000) // 500 J in 10 s: 50 W
			r, err = m.Read(t0.Add(20 * time.Second))
			require.NoError(t, err)
			require.InDelta(t, 500, zoneByName(t, r, "package-0").DeltaJ, 1e-6)
			require.Empty(t, r.Implausible)
		})
	}
}
