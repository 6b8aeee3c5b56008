//go:build !race

package loadgen

const RaceEnabled = false
