package scheduler_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

func TestHTTPValidateIsADryRunWithLinesPathsAndAPreview(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	base := apiServer(t, h)
	viewer := mintToken(t, h.bus, "validate-viewer", auth.Viewer)

	// A valid sweep: its runs and how long its phases take, nothing queued.
	var rep scheduler.ValidateReply
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, base+"/v1/experiments/validate?set=spec.repetitions=3", viewer, fmt.Sprintf(specTmpl, 1), &rep))
	require.True(t, rep.Valid, rep.Error)
	require.Equal(t, 6, rep.Runs)
	require.InDelta(t, 0.3, rep.RunSeconds, 1e-9, "50+50+150+50 ms")
	require.InDelta(t, 1.8, rep.EstimatedSeconds, 1e-9)
	require.Empty(t, rep.Problems)

	// Problems at their line, with the field path, and an override's by
	// the override.
	bad := "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec:\n  repetitons: 2\n  workload: {format: xml}\n"
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, base+"/v1/experiments/validate?set=spec.workload.value=NaN", viewer, bad, &rep))
	require.False(t, rep.Valid)
	byPath := map[string]scheduler.Problem{}
	for _, p := range rep.Problems {
		byPath[p.Path] = p
	}
	require.Equal(t, 5, byPath["spec.repetitons"].Line, "%+v", rep.Problems)
	require.Contains(t, byPath["spec.repetitons"].Message, `unknown field (did you mean "repetitions"?)`)
	require.Equal(t, 6, byPath["spec.workload.format"].Line, "%+v", rep.Problems)
	require.Equal(t, "spec.workload.value=NaN", byPath["spec.workload.value"].Set, "%+v", rep.Problems)
	require.Zero(t, byPath["spec.workload.value"].Line)

	var list []scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/experiments", &list))
	require.Empty(t, list, "a dry run queues nothing")
}

func TestHTTPTriggersListFiringsAndDisarm(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	base := apiServer(t, h)
	ctx := context.Background()
	viewer := mintToken(t, h.bus, "trig-viewer", auth.Viewer)
	operator := mintToken(t, h.bus, "trig-operator", auth.Operator)
	var rep scheduler.SubmitReply
	require.Equal(t, http.StatusAccepted, call(t, http.MethodPost, base+"/v1/experiments", operator, triggerSpec, &rep))
	require.Equal(t, "on-image", rep.Armed)

	var trigs []scheduler.TriggerStatus
	testenv.Eventually(t, 10*time.Second, "the trigger listed", func() bool {
		return call(t, http.MethodGet, base+"/v1/triggers", viewer, "", &trigs) == http.StatusOK && len(trigs) == 1
	})
	require.Equal(t, "on-image", trigs[0].Name)
	require.Equal(t, "ci.images.built", trigs[0].Subject)
	require.Zero(t, trigs[0].Fired)
	require.Zero(t, trigs[0].LastFiredMs)

	js := jetStream(t, h.url)
	testenv.Eventually(t, 10*time.Second, "trigger stream", func() bool {
		_, err := js.Stream(ctx, scheduler.StreamTriggers)
		return err == nil
	})
	before := time.Now().UnixMilli()
	_, err := js.Publish(ctx, "ci.images.built", []byte(`{"build": {"sensors": 30}}`))
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, "the firing recorded", func() bool {
		return call(t, http.MethodGet, base+"/v1/triggers", viewer, "", &trigs) == http.StatusOK && len(trigs) == 1 && trigs[0].Fired == 1
	})
	require.GreaterOrEqual(t, trigs[0].LastFiredMs, before)
	testenv.Eventually(t, 20*time.Second, "the triggered experiment", func() bool { return len(h.experimentIDs("on-image-ev")) == 1 })

	// A viewer may not disarm; an operator may; then it is gone, and a
	// second disarm is told so.
	var e map[string]string
	require.Equal(t, http.StatusForbidden, call(t, http.MethodPost, base+"/v1/triggers/on-image/disarm", viewer, "", &e))
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, base+"/v1/triggers/on-image/disarm", operator, "", &e))
	require.Equal(t, http.StatusOK, call(t, http.MethodGet, base+"/v1/triggers", viewer, "", &trigs))
	require.Empty(t, trigs)
	require.Equal(t, http.StatusNotFound, call(t, http.MethodPost, base+"/v1/triggers/on-image/disarm", operator, "", &e))
	require.Contains(t, e["error"], `no armed trigger named "on-image"`)

	// Disarmed, its subject starts nothing more: the next event is
	// dead-lettered, saying no trigger is armed for it.
	_, err = js.Publish(ctx, "ci.images.built", []byte(`{"build": {"sensors": 40}}`))
	require.NoError(t, err)
	dl, err := js.OrderedConsumer(ctx, bus.StreamDeadLetter, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	msg, err := dl.Next(jetstream.FetchMaxWait(20 * time.Second))
	require.NoError(t, err)
	require.Contains(t, msg.Headers().Get(bus.HeaderDLQReason), "no armed trigger matches subject ci.images.built")
	require.Equal(t, []string{"on-image-ev1"}, h.experimentIDs("on-image-ev"), "only the event before the disarm started an experiment")
}
