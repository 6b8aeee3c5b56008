package energy_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestModelMeterValidate(t *testing.T) {
	tests := []struct {
		name        string
		idleW, maxW float64
		wantErr     string
	}{
		{name: "typical server", idleW: 60, maxW: 250},
		{name: "flat", idleW: 40, maxW: 40},
		{name: "all zero", idleW: 0, maxW: 0},
		{name: "idle above max", idleW: 300, maxW: 250, wantErr: "idle power 300 W exceeds max power 250 W"},
		{name: "negative idle", idleW: -1, maxW: 10, wantErr: "idle power -1 W"},
		{name: "negative both", idleW: -5, maxW: -1, wantErr: "max power -1 W"},
		{name: "NaN", idleW: math.NaN(), maxW: 10, wantErr: "idle power NaN W"},
		{name: "infinite max", idleW: 1, maxW: math.Inf(1), wantErr: "max power +Inf W"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := energy.NewModelMeter("testdata/proc", tt.idleW, tt.maxW)
			err := m.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			_, readErr := m.Read(t0)
			require.Equal(t, err, readErr, "Read must refuse an invalid model")
		})
	}
}

func TestModelMeterRead(t *testing.T) {
	proc := t.TempDir()
	setCPU(t, proc, 1000, 9000)
	m := energy.NewModelMeter(proc, 50, 250)

	base, err := m.Read(t0)
	require.NoError(t, err)
	require.Equal(t, energy.NodeReading{
		Time:      t0,
		Zones:     []energy.ZoneEnergy{{Zone: energy.ModelZone}},
		Estimated: true,
		Source:    energy.SourceModel,
	}, base)

	steps := []struct {
		name              string
		after             time.Duration
		busyTicks, idleTk uint64
		wantW, wantJ      float64
		wantCumJ          float64
	}{
		// 200 busy of 800 ticks: 25 % → 50 + 200 × 0.25 = 100 W for 10 s.
		{name: "quarter load", after: 10 * time.Second, busyTicks: 1200, idleTk: 9600, wantW: 100, wantJ: 1000, wantCumJ: 1000},
		{name: "full load", after: 12 * time.Second, busyTicks: 1400, idleTk: 9600, wantW: 250, wantJ: 500, wantCumJ: 1500},
		{name: "idle", after: 16 * time.Second, busyTicks: 1400, idleTk: 10000, wantW: 50, wantJ: 200, wantCumJ: 1700},
		// No CPU tick in the interval: utilisation unknown, charged at idle.
		{name: "no ticks", after: 17 * time.Second, busyTicks: 1400, idleTk: 10000, wantW: 50, wantJ: 50, wantCumJ: 1750},
		// Same instant again: an empty interval costs nothing.
		{name: "empty interval", after: 17 * time.Second, busyTicks: 1400, idleTk: 10000, wantW: 0, wantJ: 0, wantCumJ: 1750},
	}
	for _, s := range steps {
		setCPU(t, proc, s.busyTicks, s.idleTk)
		r, err := m.Read(t0.Add(s.after))
		require.NoError(t, err, s.name)
		require.True(t, r.Estimated, s.name)
		require.Equal(t, energy.SourceModel, r.Source, s.name)
		require.InDelta(t, s.wantW, r.TotalPowerW, 1e-9, s.name)
		require.InDelta(t, s.wantJ, r.TotalDeltaJ, 1e-9, s.name)
		require.InDelta(t, s.wantCumJ, r.TotalCumulativeJ, 1e-9, s.name)
		require.Len(t, r.Zones, 1, s.name)
		require.Equal(t, energy.ZoneEnergy{
			Zone: energy.ModelZone, DeltaJ: r.TotalDeltaJ, PowerW: r.TotalPowerW, CumulativeJ: r.TotalCumulativeJ,
		}, r.Zones[0], s.name)
	}

	_, err = m.Read(t0)
	require.ErrorContains(t, err, "before the previous")
}

func TestModelMeterNoProc(t *testing.T) {
	_, err := energy.NewModelMeter(t.TempDir(), 10, 20).Read(t0)
	require.ErrorContains(t, err, "stat")
}
