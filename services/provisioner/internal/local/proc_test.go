package local

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	cases := []struct {
		name, in string
		want     procStat
		err      string
	}{
		{"plain", "4242 (sleep) S 1 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 117159 0 0 18446744073709551615",
			procStat{PID: 4242, PPID: 1, PGRP: 4240, Session: 4240, State: 'S', StartTicks: 117159}, ""},
		{"comm with spaces and parens", "17 (my (odd) cmd) Z 16 17 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0",
			procStat{PID: 17, PPID: 16, PGRP: 17, Session: 5, State: 'Z', StartTicks: 99}, ""},
		{"truncated", "17 (x) S 1 2 3", procStat{}, "fields after comm"},
		{"no comm", "17 x S 1 2 3", procStat{}, "no (comm)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStat([]byte(c.in))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestFileNameKeepsRunIDsApart(t *testing.T) {
	require.Equal(t, "exp-1_r0001", fileName("exp-1_r0001"))
	require.Equal(t, "a%2Fb", fileName("a/b"))
	require.Equal(t, "%2E..", fileName(".."))
	require.NotEqual(t, fileName("a/b"), fileName("a%2Fb"))
}
