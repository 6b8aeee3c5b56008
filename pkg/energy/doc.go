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
// A Source is the wider interface the collector samples: a Measurement is a
// node reading plus what each workload used. LocalSource pairs a NodeMeter
// with /proc (per-process CPU time, parent, and the container and pod from
// the cgroup path, see ParseCgroup); KeplerSource and ScaphandreSource scrape
// those exporters (parsed with prometheus/common's expfmt), and PromQLSource
// queries a Prometheus server. WattmeterSource reads a node's power from
// a meter outside it (a wattmeter at the wall, or the BMC) through a
// PowerSeries (Grid'5000's Kwollect: pkg/testbed/g5k.KwollectSeries), waiting,
// bounded, for an API that publishes late, and integrates it with the
// analyzer's gap policy (IntegratePower). Exporter counters go through a CounterSet, so
// an exporter restart, a counter reset or an implausible jump never yields
// negative energy or a spike. Assign maps workloads to targets (Selectors:
// process trees, pods by container id or name), each workload to at most
// one; Attribute (CPU seconds) or Split (joules an exporter attributed)
// divides the node total so that parts + unattributed = total. Sources that
// implement Checkpointer (all of them, and a bare meter's adapter) can hand
// their state to another collector.
//
// Every Source keeps one contract, checked by one suite run against each
// implementation (source_contract_test.go): the first reading is a
// baseline, then each measures exactly what was spent since; a counter
// reset or wrap is never negative energy or a spike — measured exactly
// where a range or a gauge allows, else short and counted in Resets; a
// failed Read (malformed input, a done context, time going back) changes
// nothing, so the next good one covers the whole gap; a checkpoint lets
// another process continue exactly.
//
// One plausibility rule holds on every energy path (MaxPlausibleJ): a
// counter increase implying more than the zone's plausible power — twice
// the largest powercap constraint of a RAPL zone, else the source's bound
// (DefaultMaxPowerW) — is a reset, reported in NodeReading.Implausible.
//
// The model's figures come from a ModelProfile (profile.go): per-vCPU idle
// and max watts times the node's vCPUs plus platform watts for its memory,
// the defaults declared once here (DefaultInterval, DefaultIdleWattsPerVCPU,
// …) for the spec and the collector; Calibrate fits a metered node's power
// on its utilisation, and Calibrated carries the fit to nodes without a
// meter.
//
// Meters take the sysfs and /proc roots as arguments and the reading time as
// a parameter, so everything here runs against fake trees and exporter pages
// under testdata/ and is deterministic in tests.
package energy
