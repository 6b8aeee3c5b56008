package sink

import "sync"

// Ticket follows rows handed to a Writer until they are durable: inserted
// into the store, or pushed to a backlog that survives the process (the
// spool). A collector commits a checkpoint only after the rows before it
// are durable, so a process killed at any instant loses no interval. Safe
// for concurrent use.
type Ticket struct {
	mu   sync.Mutex
	left int
	lost bool
	done chan struct{}
}

func newTicket(rows int) *Ticket {
	t := &Ticket{left: rows, done: make(chan struct{})}
	if rows == 0 {
		close(t.done)
	}
	return t
}

// Done is closed once every row is durable or one was lost.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Durable reports whether every row is durable.
func (t *Ticket) Durable() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.left == 0 && !t.lost
}

// Lost reports whether a row was dropped (a full buffer or backlog, or a
// memory backlog left at shutdown): the holder must hand the rows over
// again if it needs them durable.
func (t *Ticket) Lost() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost
}

// settle records n rows as durable.
func (t *Ticket) settle(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.left == 0 || t.lost {
		return
	}
	t.left = max(t.left-n, 0)
	if t.left == 0 {
		close(t.done)
	}
}

// lose records that a row was dropped.
func (t *Ticket) lose() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.left == 0 || t.lost {
		return
	}
	t.lost = true
	close(t.done)
}

// span is n consecutive rows of one ticket inside a batch or the pending
// buffer.
type span struct {
	t *Ticket
	n int
}

func settleAll(spans []span) {
	for _, s := range spans {
		s.t.settle(s.n)
	}
}

func loseAll(spans []span) {
	for _, s := range spans {
		s.t.lose()
	}
}

// cutSpans splits spans covering rows in order into the first n rows' spans
// and the rest's.
func cutSpans(spans []span, n int) (head, tail []span) {
	for len(spans) > 0 && n > 0 {
		s := spans[0]
		if s.n <= n {
			head = append(head, s)
			n -= s.n
			spans = spans[1:]
			continue
		}
		head = append(head, span{s.t, n})
		spans = append([]span{{s.t, s.n - n}}, spans[1:]...)
		n = 0
	}
	return head, spans
}
