package bus_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

func follow(t testing.TB, w jetstream.KeyWatcher) *watched {
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
// (lost by every restart) is declared again. Watches of all keys and of
// some keys (WatchFiltered) alike.
func TestKVBucketsResumeAfterNATSRestart(t *testing.T) {
	t.Parallel()
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
			ctx := t.Context()
			b, _ := newBusAt(t, srv.URL())
			kv, err := b.KVWith(ctx, jetstream.KeyValueConfig{Bucket: "restart_kv", History: 5, Storage: tc.storage})
			require.NoError(t, err)
			_, err = kv.Put(ctx, "old", []byte("1"))
			require.NoError(t, err)
			w, err := kv.WatchAll(ctx)
			require.NoError(t, err)
			defer func() { _ = w.Stop() }()
			fw, err := kv.WatchFiltered(ctx, []string{"old", "new"})
			require.NoError(t, err)
			defer func() { _ = fw.Stop() }()
			all, filtered := follow(t, w), follow(t, fw)
			watches := map[string]*watched{"WatchAll": all, "WatchFiltered": filtered}
			// eventually waits until every watch has seen want.
			eventually := func(what string, want map[string]string) {
				t.Helper()
				for name, seen := range watches {
					testenv.Eventually(t, 20*time.Second, name+": "+what, func() bool { return seen.is(want) })
				}
			}
			eventually("initial values", map[string]string{"old": "1"})

			restartNATS(t, srv, b, tc.emptyStore)

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
				eventually("watch follows", map[string]string{"old": "1", "new": "2"})
			} else {
				require.True(t, errors.Is(err, jetstream.ErrKeyNotFound), "lost with the bucket: %v", err)
				eventually("watch follows the new bucket and drops the lost key", map[string]string{"new": "2"})
			}

			// A delete someone makes is not one the bucket's loss made.
			require.NoError(t, kv.Delete(pctx, "new"))
			want := map[string]string{}
			if tc.kept {
				want["old"] = "1"
			}
			eventually("watch sees the delete", want)
			var lost []string
			if !tc.kept {
				lost = []string{"old"}
			}
			for name, seen := range watches {
				_, markers := seen.snapshot()
				require.Equal(t, 1, markers, "%s: the initial-values marker comes once", name)
				seen.mu.Lock()
				require.Equal(t, lost, seen.lost, "%s: bus.KeyLost tells the keys lost with the bucket from deleted ones", name)
				seen.mu.Unlock()
			}
		})
	}
}

// A filtered watch keeps its filters across NATS restarts. nats.go's
// WatchFiltered prefixes the keys it is given in place, so a watch the bus
// starts again with the same slice would follow "$KV.<bucket>.$KV.<bucket>.…"
// — up and silent, never an error — which left the provisioner ready after
// a restart while no record change reached its reconciler.
func TestKVFilteredWatchKeepsItsFiltersAcrossNATSRestarts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		filters    []string
		emptyStore bool
	}{
		{"one_filter", []string{"a.>"}, false},
		{"two_filters", []string{"a.>", "b.>"}, false},
		{"two_filters_empty_store", []string{"a.>", "b.>"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NewRestartableNATS(t)
			ctx := t.Context()
			b, _ := newBusAt(t, srv.URL())
			kv, err := b.KV(ctx, "filtered_kv")
			require.NoError(t, err)
			filters := append([]string(nil), tc.filters...)
			w, err := kv.WatchFiltered(ctx, filters)
			require.NoError(t, err)
			defer func() { _ = w.Stop() }()
			require.Equal(t, tc.filters, filters, "the caller's filters are left as they were")
			seen := follow(t, w)
			_, err = kv.Put(ctx, "a.before", []byte("1"))
			require.NoError(t, err)
			testenv.Eventually(t, 10*time.Second, "a.before seen", func() bool { return seen.is(map[string]string{"a.before": "1"}) })

			// Twice: every restart starts the inner watch again.
			for i := 1; i <= 2; i++ {
				restartNATS(t, srv, b, tc.emptyStore)
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				key := "a.after" + strconv.Itoa(i)
				_, err = kv.Put(pctx, key, []byte("2"))
				require.NoError(t, err)
				_, err = kv.Put(pctx, "c.unwatched", []byte("3"))
				require.NoError(t, err)
				pcancel()
				want := map[string]string{"a.before": "1", "a.after1": "2", "a.after2": "2"}
				if tc.emptyStore {
					want = map[string]string{key: "2"}
				} else if i == 1 {
					delete(want, "a.after2")
				}
				testenv.Eventually(t, 20*time.Second, key+" seen after restart "+strconv.Itoa(i), func() bool { return seen.is(want) })
			}
			got, _ := seen.snapshot()
			require.NotContains(t, got, "c.unwatched")
		})
	}
}

// Every form in which a revision-checked write reports that another writer
// came first counts as a conflict — for an Update, a Create and a Delete
// with LastRevision, on the bus's own KeyValue — and nothing else does.
func TestIsRevisionConflictKnowsEveryForm(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	ctx := t.Context()
	kv, err := b.KV(ctx, "conflicts")
	require.NoError(t, err)
	first, err := kv.Create(ctx, "k", []byte("1"))
	require.NoError(t, err)
	_, err = kv.Update(ctx, "k", []byte("2"), first)
	require.NoError(t, err)

	_, err = kv.Update(ctx, "k", []byte("3"), first)
	require.True(t, bus.IsRevisionConflict(err), "update at a stale revision: %v", err)
	_, err = kv.Create(ctx, "k", []byte("3"))
	require.True(t, bus.IsRevisionConflict(err), "create of a key that is there: %v", err)
	err = kv.Delete(ctx, "k", jetstream.LastRevision(first))
	require.True(t, bus.IsRevisionConflict(err), "delete at a stale revision: %v", err)

	_, err = kv.Get(ctx, "missing")
	require.Error(t, err)
	require.False(t, bus.IsRevisionConflict(err), "a missing key is no conflict: %v", err)
	require.False(t, bus.IsRevisionConflict(nil))
	require.False(t, bus.IsRevisionConflict(context.Canceled))
}
