package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// watched follows a watcher: the latest value per key, deletes applied.
type watched struct {
	mu      sync.Mutex
	values  map[string]string
	markers int      // nil entries (initial values loaded)
	lost    []string // keys deleted because their bucket was lost (bus.KeyLost)
}

func follow(t *testing.T, w jetstream.KeyWatcher) *watched {
	t.Helper()
	v := &watched{values: map[string]string{}}
	go func() {
		for e := range w.Updates() {
			v.mu.Lock()
			switch {
			case e == nil:
				v.markers++
			case e.Operation() == jetstream.KeyValuePut:
				v.values[e.Key()] = string(e.Value())
			default:
				delete(v.values, e.Key())
				if bus.KeyLost(e) {
					v.lost = append(v.lost, e.Key())
				}
			}
			v.mu.Unlock()
		}
	}()
	return v
}

func (v *watched) snapshot() (map[string]string, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]string, len(v.values))
	for k, x := range v.values {
		out[k] = x
	}
	return out, v.markers
}

func (v *watched) is(want map[string]string) bool {
	got, _ := v.snapshot()
	if len(got) != len(want) {
		return false
	}
	for k, x := range want {
		if got[k] != x {
			return false
		}
	}
	return true
}

// Key-value buckets opened through the bus come back after a NATS restart:
// a file bucket with its data when the store is kept; re-created empty when
// it is not — operations work again and a running watch tells its reader
// that the old keys are gone, then follows the new bucket; a memory bucket
// (lost by every restart) is declared again.
func TestKVBucketsResumeAfterNATSRestart(t *testing.T) {
	for _, tc := range []struct {
		name       string
		emptyStore bool
		storage    jetstream.StorageType
		kept       bool // the data survives
	}{
		{"file_same_store", false, jetstream.FileStorage, true},
		{"file_empty_store", true, jetstream.FileStorage, false},
		{"memory_same_store", false, jetstream.MemoryStorage, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NewRestartableNATS(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b, err := bus.Connect(ctx, srv.URL(), "test", testenv.Logger(t), prometheus.NewRegistry())
			require.NoError(t, err)
			defer b.Close()
			kv, err := b.KVWith(ctx, jetstream.KeyValueConfig{Bucket: "restart_kv", History: 5, Storage: tc.storage})
			require.NoError(t, err)
			_, err = kv.Put(ctx, "old", []byte("1"))
			require.NoError(t, err)
			w, err := kv.WatchAll(ctx)
			require.NoError(t, err)
			defer func() { _ = w.Stop() }()
			seen := follow(t, w)
			testenv.Eventually(t, 10*time.Second, "initial values", func() bool { return seen.is(map[string]string{"old": "1"}) })

			srv.Stop()
			testenv.Eventually(t, 10*time.Second, "not ready during the outage", func() bool { return b.Check() != nil })
			if tc.emptyStore {
				srv.StartEmpty()
			} else {
				srv.Start()
			}
			testenv.Eventually(t, 30*time.Second, "ready after the restart", func() bool { return b.Check() == nil })

			// Operations work at once (a lost bucket is declared again).
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			defer pcancel()
			_, err = kv.Put(pctx, "new", []byte("2"))
			require.NoError(t, err)
			e, err := kv.Get(pctx, "new")
			require.NoError(t, err)
			require.Equal(t, "2", string(e.Value()))
			_, err = kv.Get(pctx, "old")
			if tc.kept {
				require.NoError(t, err)
				testenv.Eventually(t, 20*time.Second, "watch follows", func() bool { return seen.is(map[string]string{"old": "1", "new": "2"}) })
			} else {
				require.True(t, errors.Is(err, jetstream.ErrKeyNotFound), "lost with the bucket: %v", err)
				testenv.Eventually(t, 20*time.Second, "watch follows the new bucket and drops the lost key", func() bool {
					return seen.is(map[string]string{"new": "2"})
				})
			}
			_, markers := seen.snapshot()
			require.Equal(t, 1, markers, "the initial-values marker comes once")

			// A delete someone makes is not one the bucket's loss made.
			require.NoError(t, kv.Delete(pctx, "new"))
			want := map[string]string{}
			if tc.kept {
				want["old"] = "1"
			}
			testenv.Eventually(t, 20*time.Second, "watch sees the delete", func() bool { return seen.is(want) })
			var lost []string
			if !tc.kept {
				lost = []string{"old"}
			}
			seen.mu.Lock()
			defer seen.mu.Unlock()
			require.Equal(t, lost, seen.lost, "bus.KeyLost tells the keys lost with the bucket from deleted ones")
		})
	}
}
