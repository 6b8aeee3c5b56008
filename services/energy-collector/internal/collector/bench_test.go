package collector_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// BenchmarkCollector100TargetsAt1Hz runs one collector sampling 100 targets
// at 1 Hz for 5 s and reports the CPU the whole test process used, as a
// share of one core, and the rows it stored per second:
//
//   - local: one node measured from /proc (a fake tree of 400 processes)
//     with 100 process targets; local-spool the same with a spool
//     directory, where the local source commits its checkpoint and rows
//     (a synced file every commit interval);
//   - kepler-10-nodes: 10 Kepler endpoints with 10 pod targets each;
//   - kepler-100-nodes: 100 Kepler endpoints with one pod target each.
//
// The exporter cases include the fake exporters, the embedded NATS server
// (the claim commits of shared sources) and the ClickHouse client, so they
// are an upper bound of the collector's own cost.
func BenchmarkCollector100TargetsAt1Hz(b *testing.B) {
	for _, bc := range []struct {
		name        string
		nodes, pods int
		spool       bool
	}{{"local", 0, 0, false}, {"local-spool", 0, 0, true}, {"kepler-10-nodes", 10, 10, false}, {"kepler-100-nodes", 100, 1, false}} {
		b.Run(bc.name, func(b *testing.B) {
			st := testenv.Store(b)
			url := testenv.NATS(b)
			cfg := testConfig("bench", time.Second)
			cfg.FlushInterval = time.Second
			if bc.spool {
				cfg.SpoolDir = b.TempDir()
			}
			var targets []events.Target
			if bc.nodes == 0 {
				cfg.ProcRoot = b.TempDir()
				procs := map[int][2]int{1: {0, 10}}
				for i := range 100 {
					procs[1000+i] = [2]int{1, 100}
					targets = append(targets, events.Target{ID: fmt.Sprintf("process/r/t%d", i), Kind: "process", Node: cfg.Node, PID: 1000 + i})
				}
				for i := range 299 {
					procs[5000+i] = [2]int{1, 10}
				}
				writeProc(b, cfg.ProcRoot, 1000, 10000, procs)
			} else {
				farm := newKeplerFarm(b)
				farm.pods = bc.pods
				cfg.Sources = farm.sources(bc.nodes)
				targets = podTargetsPer(bc.nodes, bc.pods)
			}
			in := startCollector(b, url, cfg, st)
			publishAssign(b, in.b, "e1-r0000", targets)
			scope := "pod"
			if bc.nodes == 0 {
				scope = "process"
			}
			testenv.Eventually(b, 30*time.Second, "targets sampled", func() bool {
				return distinct(b, st, "target_id", "scope = ?", scope) == uint64(len(targets))
			})
			rows0 := countRows(b, st, "1")
			b.ResetTimer()
			var cpu float64
			var wall time.Duration
			for range b.N {
				c0, t0 := cpuSeconds(), time.Now()
				time.Sleep(5 * time.Second) // a 1 Hz loop runs in real time
				cpu += cpuSeconds() - c0
				wall += time.Since(t0)
			}
			b.StopTimer()
			in.stop(b)
			b.ReportMetric(100*cpu/wall.Seconds(), "%core")
			b.ReportMetric(float64(countRows(b, st, "1")-rows0)/wall.Seconds(), "rows/s")
		})
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
