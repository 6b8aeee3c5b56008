package testenv_test

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestStallWatchSeesAStall: the process stopped for 300 ms (SIGSTOP, and a
// child that sends SIGCONT), as a starved machine stops it, shows as a
// stall at least that long.
func TestStallWatchSeesAStall(t *testing.T) {
	stalled := testenv.StallWatch(t)
	const stop = 300 * time.Millisecond
	cont := exec.Command("sh", "-c", fmt.Sprintf("sleep %.1f; kill -CONT %d", stop.Seconds(), os.Getpid()))
	require.NoError(t, cont.Start())
	began := time.Now()
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGSTOP))
	require.NoError(t, cont.Wait())
	t.Logf("stopped for %s; longest stall seen %s", time.Since(began), stalled())
	testenv.Eventually(t, 10*time.Second, "the stop seen as a stall", func() bool { return stalled() >= stop-20*time.Millisecond })
}
