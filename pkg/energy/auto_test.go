package energy_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestNewAutoMeter(t *testing.T) {
	t.Run("rapl readable", func(t *testing.T) {
		pc, proc := raplFixture(t, "two-packages")
		m, reason, err := energy.NewAutoMeter(pc, proc, 50, 200)
		require.NoError(t, err)
		require.IsType(t, &energy.RAPLMeter{}, m)
		require.Contains(t, reason, "rapl")
		require.Contains(t, reason, "package-0 + package-0/dram + package-1 + package-1/dram")
		r, err := m.Read(t0)
		require.NoError(t, err)
		require.False(t, r.Estimated)
	})
	t.Run("no powercap", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "powercap")
		m, reason, err := energy.NewAutoMeter(root, "testdata/proc", 50, 200)
		require.NoError(t, err)
		require.IsType(t, &energy.ModelMeter{}, m)
		require.Contains(t, reason, "rapl unavailable")
		require.Contains(t, reason, root)
		require.Contains(t, reason, "estimated")
		r, err := m.Read(t0)
		require.NoError(t, err)
		require.True(t, r.Estimated)
	})
	t.Run("counter unreadable", func(t *testing.T) {
		pc, proc := raplFixture(t, "psys")
		path := filepath.Join(pc, "intel-rapl:1", "energy_uj")
		require.NoError(t, os.Remove(path))
		require.NoError(t, os.Mkdir(path, 0o755)) // root reads mode-000 files, so use a directory
		m, reason, err := energy.NewAutoMeter(pc, proc, 50, 200)
		require.NoError(t, err)
		require.IsType(t, &energy.ModelMeter{}, m)
		require.Contains(t, reason, path)
		_, err = m.Read(t0)
		require.NoError(t, err)
		r, err := m.Read(t0.Add(time.Second))
		require.NoError(t, err)
		require.Equal(t, energy.SourceModel, r.Source)
	})
	t.Run("invalid model fails even with rapl", func(t *testing.T) {
		pc, proc := raplFixture(t, "two-packages")
		_, _, err := energy.NewAutoMeter(pc, proc, 300, 200)
		require.ErrorContains(t, err, "exceeds max power")
	})
	t.Run("neither source", func(t *testing.T) {
		_, _, err := energy.NewAutoMeter(filepath.Join(t.TempDir(), "none"), t.TempDir(), 50, 200)
		require.ErrorContains(t, err, "rapl unavailable")
		require.ErrorContains(t, err, "model unavailable")
	})
}
