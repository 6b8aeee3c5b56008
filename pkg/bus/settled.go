package bus

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// settledMemory is how many settled messages a consumer remembers: more
// than the server lets it hold unacknowledged (MaxAckPending).
const settledMemory = 4096

// settled remembers the messages a consumer last settled (acknowledged or
// dead-lettered) in this process. A message that waited in the client's
// pull buffer past its ack wait (only what is being handled or queued for
// a worker has its deadline extended) is delivered again into the same
// buffer: the later copy is acknowledged again without running the handler
// a second time, and without being dead-lettered as out of deliveries when
// its number passes MaxDeliver (handle.go) — the message was handled.
// Safe for concurrent use.
type settled struct {
	mu   sync.Mutex
	seen map[settledKey]struct{}
	ring []settledKey // insertion order, to forget the oldest
	next int
}

// settledKey names one stored message: its stream sequence and the time
// the stream stored it. The time tells a copy of the same message from a
// new message with the same sequence in a stream declared again (a NATS
// server restarted with an empty store starts over at 1).
type settledKey struct {
	seq    uint64
	stored int64
}

func keyOf(md *jetstream.MsgMetadata) settledKey {
	return settledKey{md.Sequence.Stream, md.Timestamp.UnixNano()}
}

func newSettled() *settled {
	return &settled{seen: make(map[settledKey]struct{}, settledMemory), ring: make([]settledKey, 0, settledMemory)}
}

// add remembers the message md describes, forgetting the oldest beyond
// settledMemory.
func (s *settled) add(md *jetstream.MsgMetadata) {
	k := keyOf(md)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[k]; ok {
		return
	}
	if len(s.ring) < settledMemory {
		s.ring = append(s.ring, k)
	} else {
		delete(s.seen, s.ring[s.next])
		s.ring[s.next] = k
		s.next = (s.next + 1) % settledMemory
	}
	s.seen[k] = struct{}{}
}

// has reports whether the message md describes was settled.
func (s *settled) has(md *jetstream.MsgMetadata) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seen[keyOf(md)]
	return ok
}
