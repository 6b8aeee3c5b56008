package spec_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/spec"
)

func TestCronNext(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04", s)
		require.NoError(t, err)
		return v
	}
	cases := []struct{ expr, from, want string }{
		{"*/15 * * * *", "2026-11-25 02:07", "2026-11-25 02:15"},
		{"0 3 * * *", "2026-11-25 02:07", "2026-11-25 03:00"},
		{"0 3 * * *", "2026-11-25 03:00", "2026-11-26 03:00"},
		{"30 22 * * 1-5", "2026-11-27 23:00", "2026-11-30 22:30"}, // Friday night → Monday
		{"0 0 1 * *", "2026-12-15 00:00", "2027-01-01 00:00"},
		{"0 12 * * 7", "2026-11-25 00:00", "2026-11-29 12:00"}, // 7 = Sunday
		{"0 0 13 * 5", "2026-11-25 00:00", "2026-11-27 00:00"}, // day 13 OR Friday
		{"5,10 8-9 * * *", "2026-11-25 08:06", "2026-11-25 08:10"},
	}
	for _, tc := range cases {
		c, err := spec.ParseCron(tc.expr)
		require.NoError(t, err, tc.expr)
		require.Equal(t, at(tc.want), c.Next(at(tc.from)), tc.expr)
	}
	for _, bad := range []string{"* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "5-1 * * * *", "a * * * *"} {
		_, err := spec.ParseCron(bad)
		require.Error(t, err, bad)
	}
}

// A step past the field's span used to overflow the value loop and set
// minutes nobody asked for (59/MaxInt fired at 1, 3, 5, ...).
func TestCronStepBeyondTheFieldIsRefused(t *testing.T) {
	for _, expr := range []string{"59/9223372036854775807 * * * *", "0/61 * * * *", "0 0/25 * * *"} {
		_, err := spec.ParseCron(expr)
		require.ErrorContains(t, err, "expected a number from 1 to", expr)
	}
	c, err := spec.ParseCron("0/60 * * * *")
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 1, 1, 1, 0, 0, 0, time.UTC), c.Next(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)))
}
