package procfs_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// statCases are TestParseStat's table and FuzzParseStat's seeds.
var statCases = []struct {
	name, in string
	want     procfs.Stat
	err      string
}{
	{"plain", "4242 (sleep) S 1 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 117159 0 0 18446744073709551615",
		procfs.Stat{PID: 4242, PPID: 1, PGRP: 4240, Session: 4240, State: 'S', StartTicks: 117159}, ""},
	{"comm with spaces and parens", "17 (my (odd) cmd) Z 16 17 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0",
		procfs.Stat{PID: 17, PPID: 16, PGRP: 17, Session: 5, State: 'Z', StartTicks: 99}, ""},
	{"cpu times", "101 (java (worker) x) S 100 101 101 0 -1 4194560 1200 3400 5 6 2000 300 7 8 20 0 1 0 1234 12345678 900\n",
		procfs.Stat{PID: 101, PPID: 100, PGRP: 101, Session: 101, State: 'S', UTime: 2000, STime: 300, StartTicks: 1234}, ""},
	{"no start time", "102 (a) (b) S 101 102 102 0 -1 0 0 0 0 0 40 10\n",
		procfs.Stat{PID: 102, PPID: 101, PGRP: 102, Session: 102, State: 'S', UTime: 40, STime: 10}, ""},
	{"truncated", "17 (x) S 1 2 3", procfs.Stat{}, "4 fields after comm, expected at least 13"},
	{"no comm", "17 x S 1 2 3", procfs.Stat{}, "no (comm)"},
	{"no closing parenthesis", "7 (broken S 1 7 7 0 -1 0 0 0 0 0 1 2\n", procfs.Stat{}, "no (comm)"},
	{"bad utime", "7 (bad) S 1 7 7 0 -1 0 0 0 0 0 x 2\n", procfs.Stat{}, `field 12 after comm: invalid number "x"`},
	{"bad start time", "7 (bad) S 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 0 0 0 0 -5\n", procfs.Stat{}, "field 20 after comm"},
	{"ppid out of range", "7 (x) S 4294967296 7 7 0 -1 0 0 0 0 0 1 2\n", procfs.Stat{}, "field 2 after comm: 4294967296 out of range"},
	{"bad pid", "x7 (x) S 1 7 7 0 -1 0 0 0 0 0 1 2\n", procfs.Stat{}, `pid "x7"`},
}

func TestParseStat(t *testing.T) {
	for _, c := range statCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := procfs.ParseStat([]byte(c.in))
			testenv.RequireOutcome(t, got, err, c.want, c.err)
		})
	}
}

// A process of this boot that exited is gone; a live one, or one of another
// machine or boot (nothing here can tell), is not.
func TestIncarnationGone(t *testing.T) {
	self := procfs.Default.Self()
	require.NotEmpty(t, self.BootID, "this machine's /proc gives a boot id")
	require.Equal(t, os.Getpid(), self.PID)
	require.NotZero(t, self.StartTicks)
	require.False(t, procfs.Default.Gone(self, self), "this process runs")

	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	st, err := procfs.Default.Stat(cmd.Process.Pid)
	require.NoError(t, err)
	child := procfs.Incarnation{Host: self.Host, BootID: self.BootID, PID: st.PID, StartTicks: st.StartTicks}
	require.False(t, procfs.Default.Gone(self, child))
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.True(t, procfs.Default.Gone(self, child), "killed and reaped")

	reused := self
	reused.StartTicks++ // the pid of this process, but another start: someone else's
	require.True(t, procfs.Default.Gone(self, reused))
	elsewhere := child
	elsewhere.Host = "other-host"
	require.False(t, procfs.Default.Gone(self, elsewhere), "another machine's process cannot be judged here")
	otherBoot := child
	otherBoot.BootID = "0000"
	require.False(t, procfs.Default.Gone(self, otherBoot))
}

// FuzzParseStat: whatever ParseStat accepts is what a plain split after
// the last ')' finds at the same places; it never panics.
func FuzzParseStat(f *testing.F) {
	for _, c := range statCases {
		f.Add([]byte(c.in))
	}
	f.Add([]byte("1 () Z 0 0 0 0 0 0 0 0 0 0 18446744073709551615 0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := procfs.ParseStat(data)
		if err != nil {
			return
		}
		s := string(data)
		fields := strings.FieldsFunc(s[strings.LastIndexByte(s, ')')+1:], func(r rune) bool { return r == ' ' || r == '\n' })
		num := func(i int) uint64 {
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				t.Fatalf("ParseStat(%q) accepted field %d %q: %v", data, i+1, fields[i], err)
			}
			return v
		}
		want := procfs.Stat{PID: st.PID, State: fields[0][0], PPID: int(num(1)), PGRP: int(num(2)), Session: int(num(3)), UTime: num(11), STime: num(12)}
		if len(fields) > 19 {
			want.StartTicks = num(19)
		}
		if st != want {
			t.Fatalf("ParseStat(%q) = %+v, want %+v", data, st, want)
		}
	})
}

// The energy collector parses every process's stat line every interval:
// a parse must not allocate.
func TestParseStatAllocatesNothing(t *testing.T) {
	line := []byte("101 (java (worker) x) S 100 101 101 0 -1 4194560 1200 3400 5 6 2000 300 7 8 20 0 1 0 1234 12345678 900\n")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := procfs.ParseStat(line); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "allocations per ParseStat")
}

func BenchmarkParseStat(b *testing.B) {
	line := []byte("101 (java (worker) x) S 100 101 101 0 -1 4194560 1200 3400 5 6 2000 300 7 8 20 0 1 0 1234 12345678 900\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := procfs.ParseStat(line); err != nil {
			b.Fatal(err)
		}
	}
}
