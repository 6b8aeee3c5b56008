package events

import (
	"errors"
	"fmt"
	"strings"
)

// CheckTriggerSubject says whether an experiment template may be armed on
// NATS subject s: one rule for the spec's validation (so `greenflow
// validate` and submit refuse it) and the declarer that makes the trigger
// stream capture it (pkg/bus). Refused: GreenFlow's own subjects (gf.>),
// NATS's ($…: JetStream's API, key-value buckets, the system account),
// reply inboxes (_INBOX…), and subjects starting with a wildcard (they
// would capture all of these). A template armed on one the declarer would
// not capture waited for it for ever — and a trial's stopped the scheduler.
func CheckTriggerSubject(s string) error {
	switch {
	case s == "":
		return errors.New("no subject")
	case strings.ContainsAny(s, " \t\r\n"):
		return fmt.Errorf("subject %q: expected no white space", s)
	case strings.HasPrefix(s, "gf."), strings.HasPrefix(s, "$"), strings.HasPrefix(s, "_INBOX"),
		strings.HasPrefix(s, ">"), strings.HasPrefix(s, "*"):
		return fmt.Errorf("subject %q: expected a NATS subject outside gf.> (GreenFlow's own), $… (NATS's), _INBOX… (replies), not starting with a wildcard", s)
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Errorf("subject %q: expected no empty token (..)", s)
		}
	}
	return nil
}
