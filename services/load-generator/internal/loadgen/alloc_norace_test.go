//go:build !race

package loadgen

// Not built under the race detector: it allocates on its own, so
// allocation counts mean nothing there.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// TestHotPathAllocatesOneSlabPerChunk: in steady state, producing records
// (encode, produce, promise) allocates one slab per emitChunk records and
// nothing per record.
func TestHotPathAllocatesOneSlabPerChunk(t *testing.T) {
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
			require.LessOrEqual(t, allocs, 1000.0/emitChunk+0.5, "allocations per 1,000-record step")
		})
	}
}
