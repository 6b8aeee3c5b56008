package energy

// White-box fuzz tests: the parsers are fuzzed directly because going
// through files would cost a file write per input for no extra coverage.

import (
	"strconv"
	"strings"
	"testing"
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
