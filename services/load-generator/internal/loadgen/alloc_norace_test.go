//go:build !race

package loadgen

// Not built under the race detector: it makes sync.Pool drop items on
// purpose, so allocation counts mean nothing there.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// TestHotPathDoesNotAllocate: in steady state, producing a record
// (encode, produce, promise, recycle) allocates nothing.
func TestHotPathDoesNotAllocate(t *testing.T) {
	for _, f := range []uc3.Format{uc3.FormatAvro, uc3.FormatJSON} {
		t.Run(string(f), func(t *testing.T) {
			prod := &ackingProducer{}
			w, start := testWorker(100_000, 1_000_000, time.Hour, prod)
			w.sched.format = f
			s := &pacing{w: w}
			ctx := context.Background()
			d := time.Duration(0)
			s.step(ctx, start) // builds the pacer
			allocs := testing.AllocsPerRun(200, func() {
				d += time.Millisecond
				s.step(ctx, start.Add(d))
			})
			require.Greater(t, prod.n, int64(200_000))
			require.Zero(t, allocs, "allocations per 1,000-record step")
		})
	}
}
