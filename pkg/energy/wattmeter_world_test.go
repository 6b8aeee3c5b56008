package energy_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
)

// wattmeterWorld is a Grid'5000 node with a wattmeter, read through
// Kwollect. Kwollect is g5ktest's in-process stand-in for the Grid'5000
// API (the real one needs an account and is not reachable from CI); it
// answers wattmetre_power_watt items as Kwollect documents them, 1 Hz
// values each averaging the second before it, so a node spending j J in a
// second has the value j W at its end.
type wattmeterWorld struct {
	api   *g5ktest.Server
	clk   *clocktesting.FakePassiveClock
	watts map[int64]float64 // unix second → W over the second before
	now   time.Time
}

func newWattmeterWorld(t *testing.T) sourceWorld {
	w := &wattmeterWorld{clk: clocktesting.NewFakePassiveClock(t0), watts: map[int64]float64{}, now: t0}
	w.api = g5ktest.New("alice", "s3cret", w.clk, map[string][]string{"taurus": {"taurus-7.lyon.grid5000.fr"}})
	t.Cleanup(w.api.Close)
	// The idle node before the test: samples up to t0.
	for s := -15; s <= 0; s++ {
		w.watts[t0.Add(time.Duration(s)*time.Second).Unix()] = 90
	}
	// Kwollect has nothing newer than its clock: the world's now.
	w.api.Power("taurus-7", func(at time.Time) float64 { return w.watts[at.Unix()] })
	return w
}

func (w *wattmeterWorld) newSource(t *testing.T) energy.Source {
	c, err := g5k.New(g5k.Config{URL: w.api.URL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	src, err := energy.NewWattmeterSource(energy.WattmeterOptions{Series: g5k.KwollectSeries{C: c, Site: "lyon", Node: "taurus-7.lyon.grid5000.fr"},
		MaxLag: time.Millisecond, Poll: time.Millisecond})
	require.NoError(t, err)
	return src
}

func (w *wattmeterWorld) spend(t *testing.T, j float64) {
	w.now = w.now.Add(time.Second)
	w.watts[w.now.Unix()] = j
	w.clk.SetTime(w.now)
}

// A wattmeter has no counter: nothing resets, wraps or jumps; its power
// covers every second.
func (w *wattmeterWorld) reset(t *testing.T, j float64) bool { w.spend(t, j); return true }
func (w *wattmeterWorld) nearWrap(*testing.T, float64) bool  { return true }
func (w *wattmeterWorld) jump(t *testing.T, j, _ float64) (bool, bool) {
	w.spend(t, j)
	return true, false
}

func (w *wattmeterWorld) corrupt(*testing.T) []string {
	w.api.Corrupt(true)
	return []string{"wattmetre_power_watt", "taurus-7", "timestamp", "expected RFC 3339"}
}

func (w *wattmeterWorld) mend(*testing.T) { w.api.Corrupt(false) }
