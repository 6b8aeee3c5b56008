package local

import (
	"strings"
	"sync"
)

// ringBuffer keeps the last n lines written to it.
type ringBuffer struct {
	mu      sync.Mutex
	n       int
	lines   []string
	partial string
}

func newRingBuffer(n int) *ringBuffer { return &ringBuffer{n: n} }

func (r *ringBuffer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.partial + string(p)
	parts := strings.Split(s, "\n")
	r.partial = parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		r.lines = append(r.lines, l)
		if len(r.lines) > r.n {
			r.lines = r.lines[len(r.lines)-r.n:]
		}
	}
	return len(p), nil
}

// String returns the last lines (at most 5) joined for an error message.
func (r *ringBuffer) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines := r.lines
	if r.partial != "" {
		lines = append(append([]string{}, lines...), r.partial)
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	if len(lines) == 0 {
		return "(no output)"
	}
	return strings.Join(lines, " | ")
}
