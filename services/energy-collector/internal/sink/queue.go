// Package sink writes the collector's samples and run metrics to ClickHouse
// in batches bounded by size and time, and keeps what ClickHouse does not
// take — while it is unreachable or failing — in a bounded queue: in memory,
// or in a spool directory that survives restarts. Nothing is lost up to the
// bound; what does not fit is counted and logged. Tickets tell the caller
// when its rows are durable, so it can checkpoint what they cover only then.
package sink

import (
	"bufio"
	"cmp"
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/greenflow/greenflow/pkg/store"
)

// Batch is one insert: samples or run metrics, never both, so a batch is
// either written whole or retried whole without duplicating the other kind.
type Batch struct {
	Samples []store.Sample
	Metrics []store.RunMetric

	// tickets follow the samples' durability; a memory queue keeps them
	// until the batch is written (a spool settles them once it holds the
	// batch, and gob does not encode unexported fields).
	tickets []span
}

// Rows counts the batch's rows.
func (b Batch) Rows() int { return len(b.Samples) + len(b.Metrics) }

// Errors of a Queue.
var (
	ErrFull  = errors.New("queue full")
	ErrEmpty = errors.New("queue empty")
)

// Queue holds batches not yet written, oldest first. Implementations are
// used by one goroutine at a time.
type Queue interface {
	// Push appends b, or returns ErrFull (wrapped) and keeps nothing of it.
	Push(b Batch) error
	// Peek returns the oldest batch; ErrEmpty when there is none. Any other
	// error means the oldest batch is unreadable: the caller counts it lost
	// and Pops it.
	Peek() (Batch, error)
	// Pop removes the oldest batch.
	Pop() error
	// Len counts batches, Rows their rows (as far as known).
	Len() int
	Rows() int
	// Durable reports whether a pushed batch survives the process (a
	// spool does; memory does not).
	Durable() bool
	Close() error
}

// Memory is a Queue in memory, bounded by rows.
type Memory struct {
	maxRows int
	rows    int
	q       []Batch
}

var _ Queue = (*Memory)(nil)

// NewMemory returns a queue holding up to maxRows rows.
func NewMemory(maxRows int) *Memory { return &Memory{maxRows: maxRows} }

// Push implements Queue.
func (m *Memory) Push(b Batch) error {
	if m.rows+b.Rows() > m.maxRows {
		return fmt.Errorf("queue %d rows in memory (bound %d): %w", m.rows, m.maxRows, ErrFull)
	}
	m.q = append(m.q, b)
	m.rows += b.Rows()
	return nil
}

// Peek implements Queue.
func (m *Memory) Peek() (Batch, error) {
	if len(m.q) == 0 {
		return Batch{}, ErrEmpty
	}
	return m.q[0], nil
}

// Pop implements Queue.
func (m *Memory) Pop() error {
	if len(m.q) == 0 {
		return ErrEmpty
	}
	m.rows -= m.q[0].Rows()
	m.q[0] = Batch{}
	m.q = m.q[1:]
	return nil
}

// Len implements Queue.
func (m *Memory) Len() int { return len(m.q) }

// Rows implements Queue.
func (m *Memory) Rows() int { return m.rows }

// Durable implements Queue: memory is not.
func (m *Memory) Durable() bool { return false }

// Close implements Queue; the batches are lost.
func (m *Memory) Close() error { return nil }

// Dir is a Queue of files in a spool directory, bounded by bytes. Each
// batch is one gob file, written to a temporary name, synced and renamed,
// so a crash leaves either the whole batch or none of it. The directory is
// locked (flock) against a second collector using it.
type Dir struct {
	dir      string
	maxBytes int64
	lock     *os.File
	files    []spoolFile
	bytes    int64
	rows     int
	next     uint64
	head     *Batch // decoded oldest batch
}

type spoolFile struct {
	seq  uint64
	rows int
	size int64
}

var _ Queue = (*Dir)(nil)

// OpenDir opens (creating) the spool directory dir, holding up to maxBytes,
// and picks up the batches a previous run left there.
func OpenDir(dir string, maxBytes int64) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("open spool %s: in use by another collector: %w", dir, err)
	}
	d := &Dir{dir: dir, maxBytes: maxBytes, lock: lock}
	entries, err := os.ReadDir(dir)
	if err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.Remove(filepath.Join(dir, name)) // a write the crash interrupted
			continue
		}
		f, ok := parseSpoolName(name)
		if !ok {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		f.size = info.Size()
		d.files = append(d.files, f)
		d.bytes += f.size
		d.rows += f.rows
		d.next = max(d.next, f.seq+1)
	}
	slices.SortFunc(d.files, func(a, b spoolFile) int { return cmp.Compare(a.seq, b.seq) })
	return d, nil
}

// spool file names: <seq>-<rows>.batch
func spoolName(f spoolFile) string { return fmt.Sprintf("%020d-%d.batch", f.seq, f.rows) }

func parseSpoolName(name string) (spoolFile, bool) {
	base, ok := strings.CutSuffix(name, ".batch")
	if !ok {
		return spoolFile{}, false
	}
	seqS, rowsS, ok := strings.Cut(base, "-")
	if !ok {
		return spoolFile{}, false
	}
	seq, err1 := strconv.ParseUint(seqS, 10, 64)
	rows, err2 := strconv.Atoi(rowsS)
	if err1 != nil || err2 != nil || rows < 0 {
		return spoolFile{}, false
	}
	return spoolFile{seq: seq, rows: rows}, true
}

// Push implements Queue.
func (d *Dir) Push(b Batch) error {
	f := spoolFile{seq: d.next, rows: b.Rows()}
	var size int64
	err := WriteFile(filepath.Join(d.dir, spoolName(f)), ".tmp-", func(tmp *os.File) error {
		w := bufio.NewWriter(tmp)
		if err := gob.NewEncoder(w).Encode(b); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		info, err := tmp.Stat()
		if err != nil {
			return err
		}
		size = info.Size()
		if d.bytes+size > d.maxBytes {
			return fmt.Errorf("spool %s holds %d bytes (bound %d): %w", d.dir, d.bytes, d.maxBytes, ErrFull)
		}
		return nil
	})
	if errors.Is(err, ErrFull) {
		return err
	}
	if err != nil {
		return fmt.Errorf("spool batch of %d rows: %w", f.rows, err)
	}
	f.size = size
	d.files = append(d.files, f)
	d.bytes += size
	d.rows += f.rows
	d.next++
	return nil
}

// WriteFile replaces path durably with what fill writes: into a temporary
// file beside it (named by tmpPattern, as os.CreateTemp), synced, renamed
// over path, and the rename synced. When fill or any step fails, path is as
// it was and the temporary file is gone.
func WriteFile(path, tmpPattern string, fill func(tmp *os.File) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tmpPattern)
	if err != nil {
		return err
	}
	err = fill(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename durable; best effort.
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		_ = f.Close()
	}
}

// Peek implements Queue.
func (d *Dir) Peek() (Batch, error) {
	if len(d.files) == 0 {
		return Batch{}, ErrEmpty
	}
	if d.head != nil {
		return *d.head, nil
	}
	path := filepath.Join(d.dir, spoolName(d.files[0]))
	f, err := os.Open(path)
	if err != nil {
		return Batch{}, fmt.Errorf("read spooled batch %s: %w", path, err)
	}
	defer f.Close()
	var b Batch
	if err := gob.NewDecoder(bufio.NewReader(f)).Decode(&b); err != nil {
		return Batch{}, fmt.Errorf("decode spooled batch %s: %w", path, err)
	}
	d.head = &b
	return b, nil
}

// Pop implements Queue.
func (d *Dir) Pop() error {
	if len(d.files) == 0 {
		return ErrEmpty
	}
	f := d.files[0]
	if err := os.Remove(filepath.Join(d.dir, spoolName(f))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove spooled batch: %w", err)
	}
	d.files = d.files[1:]
	d.bytes -= f.size
	d.rows -= f.rows
	d.head = nil
	return nil
}

// Len implements Queue.
func (d *Dir) Len() int { return len(d.files) }

// Rows implements Queue.
func (d *Dir) Rows() int { return d.rows }

// Durable implements Queue: a pushed batch is synced to disk.
func (d *Dir) Durable() bool { return true }

// Bytes is the spool's size on disk.
func (d *Dir) Bytes() int64 { return d.bytes }

// Close releases the directory; the batches stay for the next OpenDir.
func (d *Dir) Close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close() // closing the descriptor releases the flock
	d.lock = nil
	return err
}
