package state_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

func open(t *testing.T, url string) (*state.Store, *bus.Bus) {
	t.Helper()
	b := testenv.Bus(t, url, "test")
	st, err := state.New(state.Default(), state.Deps{Bus: b})
	require.NoError(t, err)
	require.NoError(t, st.Open(context.Background()))
	return st, b
}

func TestKeysAreValidAndKeepIDsApart(t *testing.T) {
	require.Equal(t, "local.exp-1_r0001", state.LocalKey("exp-1_r0001"))
	require.Equal(t, "local.r=2f1=2ex", state.LocalKey("r/1.x"), "a dot would split the key")
	require.Equal(t, "kube.r1", state.KubeKey("r1"))
	require.Equal(t, "final.r=2a=3e", state.FinalKey("r*>"), "a wildcard in an id is escaped, not a wildcard")
	require.NotEqual(t, state.Token("a.b"), state.Token("a=2eb"))
}

func TestCreateIsALockAndMutateIsRevisionChecked(t *testing.T) {
	url := testenv.NATS(t)
	a, _ := open(t, url)
	b, _ := open(t, url)
	require.Equal(t, a.Platform(), b.Platform(), "one installation, one platform id")
	ctx := context.Background()
	key := state.LocalKey("r1")
	stores := []*state.Store{a, b}
	var created atomic.Int32
	require.NoError(t, concurrently(8, func(i int) error {
		_, ok, err := stores[i%2].Create(ctx, key, state.Record{RunID: "r1", State: state.Starting})
		if ok {
			created.Add(1)
		}
		return err
	}))
	require.Equal(t, int32(1), created.Load(), "exactly one creator: the provision lock")

	// Concurrent increments through Mutate lose none.
	require.NoError(t, concurrently(8, func(i int) error {
		_, _, err := stores[i%2].Mutate(ctx, key, func(r *state.Record) (bool, error) {
			if r.Teardown == nil {
				r.Teardown = &state.Teardown{}
			}
			r.Teardown.Attempts++
			return true, nil
		})
		return err
	}))
	e, err := a.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, 8, e.Rec.Teardown.Attempts)

	stale := e
	e.Rec.State = state.Running
	_, err = a.Update(ctx, e)
	require.NoError(t, err)
	stale.Rec.State = state.Stopping
	_, err = b.Update(ctx, stale)
	require.ErrorIs(t, err, state.ErrConflict)

	found, err := b.Find(ctx, state.PrefixLocal+">")
	require.NoError(t, err)
	require.Len(t, found, 1)
	require.Equal(t, state.Running, found[0].Rec.State)
}

// The store's bucket handle is the bus's: a bucket the server lost is
// declared again (on disk) by the first operation that finds it gone.
func TestABucketLostWithItsServerStoreIsCreatedAgain(t *testing.T) {
	url := testenv.NATS(t)
	st, b := open(t, url)
	ctx := context.Background()
	require.NoError(t, b.JetStream().DeleteKeyValue(ctx, state.Bucket))
	_, _, err := st.Create(ctx, state.KubeKey("r"), state.Record{RunID: "r"})
	require.NoError(t, err, "the bucket is declared again")
	_, err = b.JetStream().KeyValue(ctx, state.Bucket)
	require.NoError(t, err)
	kv, _ := b.JetStream().KeyValue(ctx, state.Bucket)
	status, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.FileStorage, status.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage, "on disk: a NATS restart keeps it")
	_, err = st.Get(ctx, state.KubeKey("r"))
	require.NoError(t, err, "and read back")
}

// concurrently runs fn(0) … fn(n-1) at once and returns their errors
// (checked on the test's goroutine).
func concurrently(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
