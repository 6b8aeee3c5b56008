package uc3_test

import (
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// TestKeyOffset: the computed offsets are the concatenated keys' lengths,
// including across every digit-count boundary up to 10⁶.
func TestKeyOffset(t *testing.T) {
	at := 0
	for i := 0; i <= 1_000_000; i++ {
		require.Equal(t, at, uc3.KeyOffset(i), "sensor %d", i)
		at += len(uc3.AppendSensorKey(nil, i))
	}
}

// TestKeyOffsetBeyondInt32: where the former []int32 offsets overflowed
// (the keys of ~2.06×10⁸ sensors fill 2³¹ bytes), the offsets are exact —
// checked against a sum per digit count, without building a table.
func TestKeyOffsetBeyondInt32(t *testing.T) {
	sum := func(n int) int { // Σ over [0, n) of 2 + digits, by digit count
		total := 2 * n
		for d, lo := 1, 0; lo < n; d, lo = d+1, max(10, lo*10) {
			hi := min(n, max(10, lo*10))
			total += d * (hi - lo)
		}
		return total
	}
	for _, n := range []int{9, 10, 11, 99, 100, 205_555_555, 205_555_556, 210_000_000, 3_000_000_000, 1 << 40} {
		require.Equal(t, sum(n), uc3.KeyOffset(n), "n = %d", n)
	}
	require.Greater(t, uc3.KeyOffset(210_000_000), math.MaxInt32)
	// The first sensor whose key starts beyond 2³¹−1.
	n := 0
	for lo, hi := 0, 1<<31; lo < hi; {
		mid := (lo + hi) / 2
		if uc3.KeyOffset(mid) > math.MaxInt32 {
			hi = mid
		} else {
			lo = mid + 1
		}
		n = lo
	}
	require.LessOrEqual(t, uc3.KeyOffset(n-1), math.MaxInt32)
	require.Greater(t, uc3.KeyOffset(n), math.MaxInt32)
	t.Logf("int32 offsets overflowed from sensor %d on", n)
}

func TestKeyTable(t *testing.T) {
	const n = 12_345
	k := uc3.NewKeyTable(n)
	for _, s := range []int{0, 9, 10, 99, 100, 999, 1000, 9999, 10_000, n - 1} {
		key, id := k.Key(s)
		require.Equal(t, "s_"+strconv.Itoa(s), string(key))
		require.Equal(t, "s_"+strconv.Itoa(s), id)
		require.Equal(t, len(key), cap(key), "appending to a key cannot overwrite the next")
	}
}
