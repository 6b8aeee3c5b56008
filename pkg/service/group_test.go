package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// Inside a component: a Group of its loops nested in the service's Group.
// Check names what is not ready through both levels — a member still in
// Init, a member whose Check fails — and what stopped.
func TestGroupCheckNamesEveryComponentThroughNesting(t *testing.T) {
	view := &slowStarter{release: testenv.NewGate()}
	var inner service.Group
	inner.Add("view", view)
	inner.Go("tick", func(ctx context.Context) error { <-ctx.Done(); return nil })
	api := &slowStarter{release: testenv.NewGate()}
	var outer service.Group
	outer.Add("scheduler", &inner)
	outer.Add("api", api)

	require.EqualError(t, outer.Check(), "scheduler: starting\napi: starting", "nothing runs before Run")
	group := testenv.Go(t, context.Background(), outer.Run)
	testenv.Eventually(t, 10*time.Second, "the inner group running", func() bool {
		err := outer.Check()
		return err != nil && err.Error() == "scheduler: view: starting\napi: starting"
	})
	view.release.Open()
	api.release.Open()
	testenv.Eventually(t, 10*time.Second, "ready", func() bool { return outer.Check() == nil })

	broken := "kv bucket gone"
	view.broken.Store(&broken)
	require.EqualError(t, outer.Check(), "scheduler: view: kv bucket gone")
	view.broken.Store(nil)

	require.NoError(t, group.Stop(20*time.Second, "the group"))
	require.EqualError(t, outer.Check(), "scheduler: stopped\napi: stopped")
	require.EqualError(t, inner.Check(), "view: stopped\ntick: stopped")
}

// The first component to fail ends the group: the others are cancelled,
// and Run returns the error under the component's name (nested names for
// a nested group, Init errors marked as such).
func TestGroupFirstErrorStopsTheOthers(t *testing.T) {
	cancelled := make(chan struct{})
	var inner service.Group
	inner.Go("consumer", func(ctx context.Context) error { return errors.New("declare consumer x: stream not found") })
	var g service.Group
	g.Go("waiter", func(ctx context.Context) error {
		<-ctx.Done()
		close(cancelled)
		return ctx.Err() // a cancelled component's context error is not a failure
	})
	g.Add("loadgen", &inner)
	require.EqualError(t, testenv.Go(t, context.Background(), g.Run).Wait(20*time.Second, "the group"), "loadgen: consumer: declare consumer x: stream not found")
	select {
	case <-cancelled:
	default:
		t.Fatal("the other component was not cancelled")
	}

	var failing service.Group
	var nested service.Group
	nested.Add("view", initFails{})
	failing.Add("scheduler", &nested)
	require.EqualError(t, testenv.Go(t, context.Background(), failing.Run).Wait(20*time.Second, "the group"), "scheduler: view: init: consumer scheduler: stream not found")
}

// A component that returns nil while the others run (a one-shot job) ends
// the group without an error.
func TestGroupEndsWhenAComponentReturns(t *testing.T) {
	var g service.Group
	g.Go("job", func(context.Context) error { return nil })
	g.Go("server", func(ctx context.Context) error { <-ctx.Done(); return nil })
	require.NoError(t, testenv.Go(t, context.Background(), g.Run).Wait(20*time.Second, "the group"))
	require.ErrorIs(t, g.Run(context.Background()), service.ErrGroupRan, "a group runs once")
}
