// Package energy measures how much energy a node spends and splits it among
// the workloads running on it.
//
// A NodeMeter turns a hardware energy counter (Intel/AMD RAPL through the
// Linux powercap sysfs tree) or, where no counter is available, a linear
// utilisation model into NodeReadings: per-interval joules and watts per
// zone plus a node total that never counts overlapping zones twice.
// Readings carry the node's CPU time over the same interval, so Attribute can
// divide the energy among workloads by their CPU-time share (Kepler's method)
// while conserving the total.
//
// Meters take the sysfs and /proc roots as arguments and the reading time as
// a parameter, so everything here runs against fake trees under testdata/
// and is deterministic in tests.
package energy
