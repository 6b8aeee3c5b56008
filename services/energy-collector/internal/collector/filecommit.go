package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

// pinnedDir is the spool directory's subdirectory holding the commits of
// pinned sources.
const pinnedDir = "pinned"

// fileCommit is the committer of a pinned source: the source's claim is
// this collector's alone, so its commit is a file in the spool directory
// (which the spool locks against a second process), replaced atomically —
// written to a temporary name, synced, renamed, directory synced. A
// collector restarted on the same node reads it back and continues exactly
// where the last stored row ended, as a new owner does with a claim.
type fileCommit struct {
	id, path string
}

var _ committer = (*fileCommit)(nil)

type fileCommitValue struct {
	Source string          `json:"source"`
	State  json.RawMessage `json:"state,omitempty"`
	Rows   json.RawMessage `json:"rows,omitempty"`
}

// openFileCommit returns the committer of source id under spoolDir and the
// commit a previous run left there, if any.
func openFileCommit(spoolDir, id string) (*fileCommit, handover, error) {
	dir := filepath.Join(spoolDir, pinnedDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, handover{}, fmt.Errorf("open checkpoint directory %s: %w", dir, err)
	}
	f := &fileCommit{id: id, path: filepath.Join(dir, kvKey(id)+".json")}
	// A write a crash interrupted leaves its temporary file.
	if tmps, err := filepath.Glob(filepath.Join(dir, ".tmp-"+filepath.Base(f.path)+"*")); err == nil {
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, handover{}, nil
	}
	if err != nil {
		return nil, handover{}, fmt.Errorf("read checkpoint of source %s: %w", id, err)
	}
	var v fileCommitValue
	if err := json.Unmarshal(b, &v); err != nil || v.Source != id {
		// Not ours or torn (it cannot be torn: it is renamed into place):
		// start from a baseline rather than refuse to start.
		return f, handover{}, nil
	}
	return f, handover{state: v.State, rows: v.Rows}, nil
}

func (f *fileCommit) commit(_ context.Context, state, rows []byte) (bool, error) {
	b, err := json.Marshal(fileCommitValue{Source: f.id, State: state, Rows: rows})
	if err != nil {
		return false, err
	}
	if err := writeFileSync(f.path, b); err != nil {
		return false, nil
	}
	return true, nil
}

// writeFileSync replaces path with data durably.
func writeFileSync(path string, data []byte) error {
	return sink.WriteFile(path, ".tmp-"+filepath.Base(path), func(tmp *os.File) error {
		_, err := tmp.Write(data)
		return err
	})
}
