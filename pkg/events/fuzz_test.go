package events_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
)

// FuzzDecode: any type, version and body — as a consumer reads them off the
// stream, headers included — is either refused with an error or decoded
// into a message of that type that encodes again to a body its newest
// schema accepts, and decodes to the same message (what a handler that
// re-publishes or stores it relies on). Never a panic.
func FuzzDecode(f *testing.F) {
	for _, m := range filled() {
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(m.MessageType()), events.Version(m.MessageType()), b)
	}
	f.Fuzz(func(t *testing.T, typ string, version int, data []byte) {
		m, err := events.Decode(events.Type(typ), version, data)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned a message with an error: %v", err)
			}
			return
		}
		if string(m.MessageType()) != typ {
			t.Fatalf("decoded %s as %s", typ, m.MessageType())
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode %s: %v", typ, err)
		}
		newest := events.Version(m.MessageType())
		again, err := events.Decode(m.MessageType(), newest, b)
		if err != nil {
			t.Fatalf("%s/v%d body %s decoded, but its re-encoding %s fails v%d: %v", typ, version, data, b, newest, err)
		}
		b2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding is not stable:\n%s\n%s", b, b2)
		}
	})
}

// Every registered type and version has a valid seed: the newest from
// filled() (FuzzDecode adds them), older ones from the checked-in corpus —
// so a type that gets a new version cannot leave the old one unseeded, and
// a new type needs no seed file of its own.
func TestFuzzDecodeSeedCorpusCoversEveryVersion(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	valid := map[string]bool{}
	for _, m := range filled() {
		valid[string(m.MessageType())+"/v"+strconv.Itoa(events.Version(m.MessageType()))] = true
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		lines := strings.SplitN(string(b), "\n", 4)
		require.Len(t, lines, 4, e.Name())
		require.Equal(t, "go test fuzz v1", lines[0])
		typ, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		require.NoError(t, err, e.Name())
		ver, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(lines[2], "int("), ")"))
		require.NoError(t, err, e.Name())
		body, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[3]), "[]byte("), ")"))
		require.NoError(t, err, e.Name())
		if _, err := events.Decode(events.Type(typ), ver, []byte(body)); err == nil {
			valid[typ+"/v"+strconv.Itoa(ver)] = true
		}
	}
	for _, k := range events.Known() {
		require.True(t, valid[k], "neither filled() nor testdata/fuzz/FuzzDecode has a valid body of %s", k)
	}
}
