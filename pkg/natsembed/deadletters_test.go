package natsembed_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// Dead letters are read by the greenflow command and admin only, with the
// stream's message and direct gets: every other user is refused those,
// and the CLI may not make a consumer of the dead-letter stream (which
// could pull from a durable there) — its right reads and takes nothing.
func TestOnlyTheCLIAndAdminReadDeadLetters(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	get := "$JS.API.STREAM.MSG.GET." + bus.StreamDeadLetter
	direct := "$JS.API.DIRECT.GET." + bus.StreamDeadLetter
	for _, u := range bus.Users() {
		v := &violations{}
		nc := s.Conn(t, u, nats.ErrorHandler(v.handler))
		if u == string(events.ServiceCLI) || u == bus.UserAdmin {
			reply, err := nc.Request(get, []byte(`{"seq":1}`), 5*time.Second)
			require.NoError(t, err, u)
			require.Contains(t, string(reply.Data), `"err_code":10037`, "%s: answered (no message yet)", u)
			reply, err = nc.Request(direct, []byte(`{"seq":1,"batch":10}`), 5*time.Second)
			require.NoError(t, err, u)
			require.Equal(t, "404", reply.Header.Get("Status"), "%s: answered (no message yet)", u)
			continue
		}
		for _, subj := range []string{get, direct} {
			require.NoError(t, nc.PublishRequest(subj, nc.NewRespInbox(), []byte(`{"seq":1}`)))
			require.NoError(t, nc.Flush())
			testenv.Eventually(t, 5*time.Second, fmt.Sprintf("%s refused %s", u, subj), func() bool { return v.has("publish", subj) })
		}
	}
	v := &violations{}
	nc := s.Conn(t, string(events.ServiceCLI), nats.ErrorHandler(v.handler))
	for _, subj := range []string{
		"$JS.API.CONSUMER.CREATE." + bus.StreamDeadLetter + ".any",
		"$JS.API.CONSUMER.CREATE." + bus.StreamDeadLetter,
		"$JS.API.CONSUMER.DURABLE.CREATE." + bus.StreamDeadLetter + ".any",
		"$JS.API.CONSUMER.MSG.NEXT." + bus.StreamDeadLetter + ".any",
		"$JS.API.STREAM.PURGE." + bus.StreamDeadLetter,
		"$JS.API.STREAM.MSG.DELETE." + bus.StreamDeadLetter,
	} {
		require.NoError(t, nc.PublishRequest(subj, nc.NewRespInbox(), []byte(`{}`)))
		require.NoError(t, nc.Flush())
		testenv.Eventually(t, 5*time.Second, "the CLI refused "+subj, func() bool { return v.has("publish", subj) })
	}
}
