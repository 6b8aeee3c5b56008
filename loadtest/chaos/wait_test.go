package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A leftover is confirmed only when every read over the time still finds
// it: one that goes after a few reads is not, and the reads stop as soon
// as nothing is left.
func TestConfirmedKeepsOnlyWhatEveryReadFinds(t *testing.T) {
	t.Parallel()
	reads := 0
	still := confirmed(t.Context(), 2*time.Second, []string{"stays", "goes"}, func() []string {
		reads++
		if reads > 2 {
			return []string{"stays", "new"}
		}
		return []string{"stays", "goes"}
	})
	require.Equal(t, map[string]bool{"stays": true}, still, "only what every read saw, nothing first seen later")

	reads = 0
	start := time.Now()
	require.Empty(t, confirmed(t.Context(), time.Minute, []int{1, 2}, func() []int { reads++; return nil }))
	require.Equal(t, 1, reads, "nothing left after the first read: no more reads")
	require.Less(t, time.Since(start), 30*time.Second, "it did not wait out its minute")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Empty(t, confirmed(ctx, time.Minute, []string{"x"}, func() []string { return []string{"x"} }), "no confirmation once ctx ended")
}

// poll answers as soon as the condition holds, and the condition's last
// answer at the deadline.
func TestPollStopsWhenTheConditionHolds(t *testing.T) {
	t.Parallel()
	calls := 0
	require.True(t, poll(t.Context(), time.Minute, time.Millisecond, func() bool { calls++; return calls == 3 }))
	require.Equal(t, 3, calls)
	require.False(t, poll(t.Context(), 20*time.Millisecond, time.Millisecond, func() bool { return false }))
}
