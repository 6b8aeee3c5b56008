package provisioner

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// view is the reconciler's copy of the records it looks after, kept
// current by a KV watch; every change it decides on is a revision-checked
// write, so a stale view costs a retry, never a wrong write.
type view struct {
	records map[string]state.Entry
	finals  map[string]finalEntry // by run id
}

type finalEntry struct {
	key string
	rev uint64
	f   state.Final
}

func newView() *view {
	return &view{records: map[string]state.Entry{}, finals: map[string]finalEntry{}}
}

// apply takes one update of the watch; gone is the run of a record that
// was deleted (no longer to be watched).
func (v *view) apply(u jetstream.KeyValueEntry) (gone string) {
	key := u.Key()
	deleted := u.Operation() != jetstream.KeyValuePut
	if strings.HasPrefix(key, state.PrefixFinal) {
		var f state.Final
		if deleted || json.Unmarshal(u.Value(), &f) != nil {
			for run, fe := range v.finals {
				if fe.key == key {
					delete(v.finals, run)
				}
			}
			return ""
		}
		v.finals[f.RunID] = finalEntry{key: key, rev: u.Revision(), f: f}
		return ""
	}
	if deleted {
		if e, ok := v.records[key]; ok {
			delete(v.records, key)
			return e.Rec.RunID
		}
		return ""
	}
	e := state.Entry{Key: key, Rev: u.Revision()}
	if json.Unmarshal(u.Value(), &e.Rec) != nil {
		return ""
	}
	v.records[key] = e
	return ""
}

func (v *view) copy() *view {
	c := newView()
	for k, e := range v.records {
		c.records[k] = e
	}
	for k, f := range v.finals {
		c.finals[k] = f
	}
	return c
}
