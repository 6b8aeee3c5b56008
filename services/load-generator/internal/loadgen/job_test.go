package loadgen

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestShareOutcome: how a share that ended is judged, the first matching
// case winning — a Kafka abort, then records not delivered fail the run; a
// hand-over at shutdown, a stop and a shortfall do not.
func TestShareOutcome(t *testing.T) {
	broker := errors.New("broker gone")
	tests := []struct {
		name        string
		out         outcome
		undelivered int64
		handedOver  bool
		failed      bool
		reason      string
	}{
		{"ran to its end", outcome{}, 0, false, false, ""},
		{"aborted", outcome{aborted: broker, stopped: true, behind: 5}, 3, true, true, "3 of 100 records not delivered: broker gone"},
		{"undelivered", outcome{flush: broker, stopped: true}, 2, true, true, "2 of 100 records not delivered within 30s: broker gone"},
		{"handed over", outcome{stopped: true, behind: 5}, 0, true, false, "instance shut down; its ranges were handed over"},
		{"stopped", outcome{stopped: true, behind: 5}, 0, false, false, "stopped"},
		{"behind", outcome{behind: 5}, 0, false, false, "5 records due were not produced (behind schedule)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			failed, reason := shareOutcome(tt.out, 100, tt.undelivered, tt.handedOver, 30*time.Second)
			require.Equal(t, tt.failed, failed)
			require.Equal(t, tt.reason, reason)
		})
	}
}
