package energy_test

// The tests against this machine's real /proc; the _linux file name keeps
// them to Linux, where the local meters work.

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestProcFSRealProc(t *testing.T) {
	p := energy.ProcFS{Root: "/proc"}

	cpu, err := p.NodeCPU()
	require.NoError(t, err)
	require.Positive(t, cpu.BusySeconds)
	require.LessOrEqual(t, cpu.BusySeconds, cpu.TotalSeconds)
	n, err := p.NumCPU()
	require.NoError(t, err)
	// runtime.NumCPU is the affinity set, a subset of the online CPUs.
	require.GreaterOrEqual(t, n, runtime.NumCPU())

	// Burn CPU until the kernel's 10 ms accounting shows it.
	self := os.Getpid()
	deadline := time.Now().Add(10 * time.Second)
	var secs float64
	for secs == 0 && time.Now().Before(deadline) {
		burn()
		secs, err = p.ProcessTreeCPUSeconds(self)
		require.NoError(t, err)
	}
	require.Positive(t, secs, "own process tree CPU time after burning CPU")
}

// TestProcFSRealChild checks that a live child's CPU time counts towards its
// parent's tree.
func TestProcFSRealChild(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err, "a shell to run a busy child")
	cmd := exec.Command(sh, "-c", "while :; do :; done")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	p := energy.ProcFS{Root: "/proc"}
	var child float64
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		child, err = p.ProcessTreeCPUSeconds(cmd.Process.Pid)
		require.NoError(t, err)
		if child == 0 {
			runtime.Gosched()
		}
	}
	require.Positive(t, child, "busy child's CPU time")
	// Read after the child: its time only grows, so the tree covers it.
	tree, err := p.ProcessTreeCPUSeconds(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, tree, child, "tree of the test process vs its child")
}

var sink uint64

// burn spends a few milliseconds of CPU.
func burn() {
	x := uint64(1)
	for i := range 5_000_000 {
		x = x*6364136223846793005 + uint64(i)
	}
	sink += x
}
