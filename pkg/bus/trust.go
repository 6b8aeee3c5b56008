package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/nats-io/nkeys"
)

// Why messages are signed. NATS permissions say who may publish on a
// subject, but the server itself publishes for its clients in ways no
// permission checks: a stream's republish, and a push consumer's
// deliver_subject (nats-io/nats-server#8274, open). A trial used both to put
// a collector's bytes on gf.evt.run.analyzed and an API token into the token
// bucket. So every lifecycle message and every key-value record carries the
// signature of its producer's nkey, and every reader checks it against the
// contract: a message of type T counts only when signed by a service the
// events registry names as T's producer (or admin), a record of bucket B
// only when signed by a user that writes B. The public keys come from a
// trust file the operator gives every service (`greenflow nats-config`, the
// dev stack's state dir, the cluster's Secrets), never from NATS.

// TrustFileName is the trust file's name beside the nkey seeds (the dev
// stack's state dir, a cluster's credentials Secret): a service finds it
// next to its seed when --nats-trust-file is not given.
const TrustFileName = "nats-trust.json"

// Trust maps the NATS users' public keys to their names.
type Trust struct {
	users map[string]string // public key → user
}

// trustFile is the file's form: user → public keys.
type trustFile struct {
	Comment string              `json:"comment,omitempty"`
	Users   map[string][]string `json:"users"`
}

// NewTrust is the trust of keys (user → its public keys), each checked.
func NewTrust(keys map[string][]string) (*Trust, error) {
	t := &Trust{users: map[string]string{}}
	var errs []error
	for user, pubs := range keys {
		if !slices.Contains(Users(), user) {
			errs = append(errs, fmt.Errorf("user %q: expected one of %v", user, Users()))
			continue
		}
		for _, pub := range pubs {
			if !nkeys.IsValidPublicUserKey(pub) {
				errs = append(errs, fmt.Errorf("user %s: key %q: expected a user public key (U…)", user, pub))
				continue
			}
			if other, ok := t.users[pub]; ok && other != user {
				errs = append(errs, fmt.Errorf("key %s: given to both %s and %s", pub, other, user))
				continue
			}
			t.users[pub] = user
		}
	}
	return t, errors.Join(errs...)
}

// User is the user whose public key pub is.
func (t *Trust) User(pub string) (string, bool) {
	u, ok := t.users[pub]
	return u, ok
}

// LoadTrust reads a trust file.
func LoadTrust(path string) (*Trust, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("nats trust file (every NATS user's public key, which `greenflow dev`, `greenflow nats-config` and `greenflow cluster up` write as %s beside the seeds; --nats-trust-file names another): %w", TrustFileName, err)
	}
	// Whoever can change it can make this service believe their key.
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("nats trust file %s: mode %s lets others than its owner change it, and so choose whose signatures count: expected no group or other write (chmod go-w)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nats trust file: %w", err)
	}
	var f trustFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("nats trust file %s: expected JSON {\"users\": {user: [public key, …]}}: %w", path, err)
	}
	if len(f.Users) == 0 {
		return nil, fmt.Errorf("nats trust file %s: expected a \"users\" map of user to public keys, found none", path)
	}
	t, err := NewTrust(f.Users)
	if err != nil {
		return nil, fmt.Errorf("nats trust file %s: %w", path, err)
	}
	return t, nil
}

// WriteTrust writes the trust file for keys (user → public keys). It holds
// no secret; it is written 0600 like everything beside the seeds.
func WriteTrust(path string, keys map[string][]string) error {
	f := trustFile{Comment: "GreenFlow NATS users' public keys: a message or record counts only when signed by the key of a user the contract allows (pkg/bus/trust.go)", Users: map[string][]string{}}
	for u, pubs := range keys {
		pubs = slices.Clone(pubs)
		sort.Strings(pubs)
		f.Users[u] = pubs
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode nats trust file: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write nats trust file: %w", err)
	}
	return nil
}

// DefaultTrustFile is where a service looks for the trust file when none
// is named: beside its nkey seed.
func DefaultTrustFile(seedFile string) string {
	return filepath.Join(filepath.Dir(seedFile), TrustFileName)
}

// trusts holds the trust each nkey's Credentials loaded, by public key:
// Credentials.Options hands nats.go the key, and New finds the trust that
// came with it from the connection's key (nats.Option carries no more).
var trusts sync.Map // public key → *Trust

func registerTrust(pub string, t *Trust) { trusts.Store(pub, t) }

func trustFor(pub string) *Trust {
	t, ok := trusts.Load(pub)
	if !ok {
		return nil
	}
	return t.(*Trust)
}
