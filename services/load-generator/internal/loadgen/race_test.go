//go:build race

package loadgen

// RaceEnabled: the race detector slows the hot path ~10× and makes
// sync.Pool drop items on purpose, so rate and allocation targets do not
// apply.
const RaceEnabled = true
