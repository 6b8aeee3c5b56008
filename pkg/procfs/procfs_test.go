package procfs_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/procfs"
)

func TestParseStat(t *testing.T) {
	cases := []struct {
		name, in string
		want     procfs.Stat
		err      string
	}{
		{"plain", "4242 (sleep) S 1 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 117159 0 0 18446744073709551615",
			procfs.Stat{PID: 4242, PPID: 1, PGRP: 4240, Session: 4240, State: 'S', StartTicks: 117159}, ""},
		{"comm with spaces and parens", "17 (my (odd) cmd) Z 16 17 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0",
			procfs.Stat{PID: 17, PPID: 16, PGRP: 17, Session: 5, State: 'Z', StartTicks: 99}, ""},
		{"truncated", "17 (x) S 1 2 3", procfs.Stat{}, "fields after comm"},
		{"no comm", "17 x S 1 2 3", procfs.Stat{}, "no (comm)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := procfs.ParseStat([]byte(c.in))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
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
