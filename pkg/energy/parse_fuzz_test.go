package energy

// White-box fuzz tests: the parsers are fuzzed directly because going
// through files would cost a file write per input for no extra coverage.

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func FuzzParsePIDStat(f *testing.F) {
	f.Add([]byte("101 (java (worker) x) S 100 101 101 0 -1 4194560 1200 3400 5 6 2000 300 7 8 20 0 1 0\n"))
	f.Add([]byte("102 (a) (b) S 101 102 102 0 -1 0 0 0 0 0 40 10\n"))
	f.Add([]byte("1 () Z 0 0 0 0 0 0 0 0 0 0 18446744073709551615 0"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parsePIDStat(data)
		if err != nil {
			return
		}
		// Whatever parsed must be what a plain split after the last ')'
		// finds at the same positions.
		rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
		fields := strings.FieldsFunc(rest, func(r rune) bool { return r == ' ' || r == '\n' })
		var want [3]uint64
		for i, field := range []int{1, 11, 12} {
			v, err := strconv.ParseUint(fields[field], 10, 64)
			if err != nil {
				t.Fatalf("parsePIDStat(%q) accepted field %d %q: %v", data, field+1, fields[field], err)
			}
			want[i] = v
		}
		if got := [3]uint64{uint64(st.ppid), st.utime, st.stime}; got != want {
			t.Fatalf("parsePIDStat(%q) = %v, want %v", data, got, want)
		}
	})
}

func FuzzParseCPULine(f *testing.F) {
	f.Add(" 10000 500 3000 80000 1500 200 300 0 0 0\n")
	f.Add(" 1 2 3 4")
	f.Add(" 18446744073709551615 1 1 1 1 1 1 1")
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parseCPULine(line)
		if err != nil {
			return
		}
		if c.BusySeconds < 0 || c.BusySeconds > c.TotalSeconds {
			t.Fatalf("parseCPULine(%q) = %+v, want 0 ≤ busy ≤ total", line, c)
		}
	})
}

// measureFunc is an exporter source's measure.
type measureFunc func(fams map[string]*dto.MetricFamily, now time.Time, d time.Duration) (Measurement, error)

// fuzzExporter seeds f with fixture pages (testdata/<dir>/<page>.prom) and
// extra, and feeds every input to a fresh source's measure twice, one second
// apart, checking what must hold for any input: no negative, non-finite or
// implausible energy, and no negative workload.
func fuzzExporter(f *testing.F, dir string, pages []string, extra string, measure func() measureFunc) {
	for _, name := range pages {
		b, err := os.ReadFile("testdata/" + dir + "/" + name + ".prom")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(extra))
	f.Fuzz(func(t *testing.T, data []byte) {
		fams, err := ParseExposition(bytes.NewReader(data))
		if err != nil {
			return
		}
		read := measure()
		now := time.Unix(1740830400, 0)
		for i := range 2 {
			d := time.Duration(i) * time.Second
			m, err := read(fams, now.Add(d), d)
			if err != nil {
				return
			}
			if !(m.TotalDeltaJ >= 0) || math.IsInf(m.TotalDeltaJ, 0) || m.TotalDeltaJ > DefaultMaxPowerW*d.Seconds()+1e-9 {
				t.Fatalf("reading %d: total %v J over %s", i, m.TotalDeltaJ, d)
			}
			for _, w := range m.Workloads {
				if !(w.Value >= 0) || math.IsInf(w.Value, 0) {
					t.Fatalf("reading %d: workload %s %v", i, w.Key, w.Value)
				}
			}
		}
	})
}

func FuzzKeplerExposition(f *testing.F) {
	fuzzExporter(f, "kepler", []string{"01-baseline", "03-exporter-restart", "07-spike"},
		"kepler_node_cpu_joules_total{zone=\"package\"} NaN\nkepler_node_cpu_watts{zone=\"package\"} -Inf\n",
		func() measureFunc { return NewKeplerSource(KeplerOptions{URL: "fuzz"}).measure })
}

func FuzzScaphandreExposition(f *testing.F) {
	fuzzExporter(f, "scaphandre", []string{"01-baseline", "03-wraparound", "power-only"},
		"scaph_host_power_microwatts 5e7\nscaph_host_energy_microjoules -1\n",
		func() measureFunc { return NewScaphandreSource(ScaphandreOptions{URL: "fuzz"}).measure })
}

// FuzzRestoreCheckpoint: a checkpoint comes from another process through
// NATS; whatever it holds, Restore either rejects it or leaves a state that
// reads without negative energy.
func FuzzRestoreCheckpoint(f *testing.F) {
	f.Add([]byte(`{"v":1,"time_ns":1740830399000000000,"counters":{"node|package|":1000,"node|dram|":200}}`))
	f.Add([]byte(`{"v":1,"time_ns":1,"counters":{"node|package|":-5}}`))
	f.Add([]byte(`{}`))
	page, err := os.ReadFile("testdata/kepler/02-steady.prom")
	if err != nil {
		f.Fatal(err)
	}
	fams, err := ParseExposition(bytes.NewReader(page))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k := NewKeplerSource(KeplerOptions{URL: "fuzz"})
		if k.Restore(data) != nil {
			return
		}
		now := time.Unix(1740830400, 0)
		d, err := k.interval(now)
		if err != nil {
			return
		}
		m, err := k.measure(fams, now, d)
		if err != nil {
			return
		}
		if !(m.TotalDeltaJ >= 0) || m.TotalDeltaJ > DefaultMaxPowerW*d.Seconds()+1e-9 {
			t.Fatalf("total %v J over %s", m.TotalDeltaJ, d)
		}
	})
}
