package energy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestProcFSNodeCPU(t *testing.T) {
	got, err := energy.ProcFS{Root: "testdata/proc"}.NodeCPU()
	require.NoError(t, err)
	// busy = user 10000 + nice 500 + system 3000 + irq 200 + softirq 300 + steal 0
	require.InDelta(t, 140, got.BusySeconds, 1e-9, "BusySeconds")
	// total adds idle 80000 + iowait 1500; guest columns are inside user/nice
	require.InDelta(t, 955, got.TotalSeconds, 1e-9, "TotalSeconds")
}

func TestProcFSNodeCPUFormats(t *testing.T) {
	tests := []struct {
		name      string
		stat      string
		wantBusy  float64
		wantTotal float64
		wantErr   string
	}{
		{
			name:      "guest time is not counted twice",
			stat:      "cpu  100 0 0 100 0 0 0 0 50 50\n",
			wantBusy:  1,
			wantTotal: 2,
		},
		{
			name:      "pre-2.6.11 kernel with four columns",
			stat:      "cpu  100 100 100 700\n",
			wantBusy:  3,
			wantTotal: 10,
		},
		{name: "too few columns", stat: "cpu  1 2 3\n", wantErr: "at least 4 columns"},
		{name: "not a number", stat: "cpu  1 2 x 4 5\n", wantErr: "column 3"},
		{name: "no aggregate line", stat: "cpu0 1 2 3 4\nintr 5\n", wantErr: "no aggregate cpu line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, root, "stat", tt.stat)
			got, err := energy.ProcFS{Root: root}.NodeCPU()
			if tt.wantErr != "" {
				requireErrorMentions(t, err, tt.wantErr, root)
				return
			}
			require.NoError(t, err)
			require.InDelta(t, tt.wantBusy, got.BusySeconds, 1e-9, "BusySeconds")
			require.InDelta(t, tt.wantTotal, got.TotalSeconds, 1e-9, "TotalSeconds")
		})
	}
	_, err := energy.ProcFS{Root: t.TempDir()}.NodeCPU()
	require.ErrorIs(t, err, fs.ErrNotExist, "NodeCPU without stat")
}

func TestProcFSNumCPU(t *testing.T) {
	n, err := energy.ProcFS{Root: "testdata/proc"}.NumCPU()
	require.NoError(t, err)
	require.Equal(t, 4, n)

	root := t.TempDir()
	writeFile(t, root, "stat", "cpu  1 2 3 4\nctxt 5\n")
	_, err = energy.ProcFS{Root: root}.NumCPU()
	requireErrorMentions(t, err, "no per-cpu lines")
}

func TestProcFSProcessTreeCPUSeconds(t *testing.T) {
	p := energy.ProcFS{Root: "testdata/proc"}
	// The fixture's tree, CPU seconds as utime+stime ticks / 100:
	//   1 systemd 4 ─┬─ 100 bash 1.5 ─┬─ 101 "java (worker) x" 23 ── 102 "a) (b" 0.5
	//                │                └─ 103 sleep 0.01
	//                └─ 200 sshd 1
	// 300 has a directory but no stat: it exited during the walk.
	tests := []struct {
		pid  int
		want float64
	}{
		{pid: 1, want: 30.01},
		{pid: 100, want: 25.01},
		{pid: 101, want: 23.5}, // comm with spaces and parentheses
		{pid: 102, want: 0.5},  // comm "a) (b"
		{pid: 103, want: 0.01},
		{pid: 200, want: 1},
	}
	for _, tt := range tests {
		got, err := p.ProcessTreeCPUSeconds(tt.pid)
		require.NoError(t, err)
		require.InDelta(t, tt.want, got, 1e-9, "tree of pid %d", tt.pid)
	}

	for _, pid := range []int{300, 999} {
		_, err := p.ProcessTreeCPUSeconds(pid)
		require.ErrorIs(t, err, fs.ErrNotExist, "pid %d", pid)
	}
}

func TestProcFSProcessTreesCPUSeconds(t *testing.T) {
	got, err := energy.ProcFS{Root: "testdata/proc"}.ProcessTreesCPUSeconds([]int{100, 101, 200, 999})
	require.NoError(t, err)
	require.Len(t, got, 3, "pid 999 does not exist and is left out")
	require.InDelta(t, 25.01, got[100], 1e-9)
	require.InDelta(t, 23.5, got[101], 1e-9, "inside 100's tree and counted again on its own")
	require.InDelta(t, 1, got[200], 1e-9)

	_, err = energy.ProcFS{Root: filepath.Join(t.TempDir(), "none")}.ProcessTreesCPUSeconds([]int{1})
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestProcFSProcessTreeMalformed(t *testing.T) {
	tests := map[string]string{
		"no closing parenthesis": "7 (broken S 1 7 7 0 -1 0 0 0 0 0 1 2\n",
		"truncated":              "7 (short) S 1 7 7 0 -1 0 0 0 0 0 1\n",
		"bad utime":              "7 (bad) S 1 7 7 0 -1 0 0 0 0 0 x 2\n",
	}
	for name, stat := range tests {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, root, "7/stat", stat)
			_, err := energy.ProcFS{Root: root}.ProcessTreeCPUSeconds(7)
			requireErrorMentions(t, err, root+"/7/stat")
		})
	}
}

func BenchmarkProcessTreeCPUSeconds(b *testing.B) {
	b.Run("fixture", func(b *testing.B) {
		p := energy.ProcFS{Root: "testdata/proc"}
		for b.Loop() {
			if _, err := p.ProcessTreeCPUSeconds(100); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("real", func(b *testing.B) {
		if runtime.GOOS != "linux" {
			b.Skip("needs a Linux /proc")
		}
		p := energy.ProcFS{Root: "/proc"}
		pid := os.Getpid()
		for b.Loop() {
			if _, err := p.ProcessTreeCPUSeconds(pid); err != nil {
				b.Fatal(err)
			}
		}
	})
}
