package store_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// BenchmarkSampleRowBytesOnDisk measures what a year of samples costs on
// disk (the README's sizing plan): an hour of realistic rows — 10 nodes,
// each a node series, two RAPL zones and 40 pod targets, sampled at 1 Hz,
// power a noisy random walk (synthetic constant rows compress to almost
// nothing and would mislead) — inserted as the collectors do, merged
// (OPTIMIZE … FINAL), and the table's bytes on disk read from ClickHouse's
// system.parts. Reported: bytes/row on disk and uncompressed.
func BenchmarkSampleRowBytesOnDisk(b *testing.B) {
	for b.Loop() {
		s := testenv.Store(b)
		ctx := b.Context()
		t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		r := rand.New(rand.NewPCG(1, 2))
		type series struct {
			node, scope, target, zone string
			p, e                      float64
		}
		var ss []*series
		for n := range 10 {
			node := fmt.Sprintf("node-%02d.testbed.example", n)
			ss = append(ss, &series{node: node, scope: "node", target: "node/" + node, p: 60})
			for z := range 2 {
				ss = append(ss, &series{node: node, scope: "zone", target: fmt.Sprintf("zone/%s/package-%d", node, z), zone: fmt.Sprintf("package-%d", z), p: 25})
			}
			for p := range 40 {
				ss = append(ss, &series{node: node, scope: "pod", target: fmt.Sprintf("pod/gf-exp%04d-r0001/sut-%d/app", n, p), p: 1.5})
			}
		}
		var batch []store.Sample
		for sec := range 3600 {
			for _, x := range ss {
				x.p = max(0.01, x.p*(1+0.02*r.NormFloat64()))
				x.e += x.p
				batch = append(batch, store.Sample{TsMs: t0 + int64(sec)*1000 + int64(r.IntN(20)), Node: x.node, Scope: x.scope, TargetID: x.target,
					Zone: x.zone, Source: "rapl", PowerW: x.p, EnergyJ: x.e, DeltaJ: x.p, IntervalMs: 1000, Collector: "collector-" + x.node})
			}
			if len(batch) >= 100_000 || sec == 3599 {
				if err := s.InsertSamples(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		if err := s.Conn().Exec(ctx, "OPTIMIZE TABLE samples FINAL"); err != nil {
			b.Fatal(err)
		}
		var rows, onDisk, raw uint64
		if err := s.Conn().QueryRow(ctx, "SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "+
			"WHERE active AND database = currentDatabase() AND table = 'samples'").Scan(&rows, &onDisk, &raw); err != nil {
			b.Fatal(err)
		}
		if want := uint64(len(ss) * 3600); rows != want {
			b.Fatalf("%d rows in the table, want %d", rows, want)
		}
		b.ReportMetric(float64(onDisk)/float64(rows), "bytes/row")
		b.ReportMetric(float64(raw)/float64(rows), "raw-bytes/row")
	}
}
