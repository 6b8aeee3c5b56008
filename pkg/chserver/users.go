package chserver

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The server's users. ClickHouse 18.16 has no SQL user management (no
// CREATE USER), so they are declared in users.xml, with SHA-256 password
// hashes; there is no `default` user, so a connection without a password
// (or with any other name) is refused.
const (
	// UserWriter inserts (every service) and migrates (store.Open applies
	// the migrations at every service's start, so the user that writes
	// also changes the schema; a separate migrator would be one more
	// secret for the same services to hold).
	UserWriter = "greenflow_writer"
	// UserReader reads only (readonly=1): the CLI's results, export and
	// report, dashboards. Not readonly=2, which lets a query change its
	// settings: on 18.16 that also allows table functions (url(), file(),
	// remote() — reading the server's files, reaching any host from it)
	// and lifting the profile's memory limit. With readonly=1 the server
	// refuses SET, a SETTINGS clause and every table function; settings a
	// client sends with a query (a deadline's max_execution_time) are
	// ignored, not refused, so clients that send them keep working.
	UserReader = "greenflow_reader"
)

// PasswordFile is where user's password is kept under the server's dir
// (mode 0600, the dir 0700).
func PasswordFile(dir, user string) string { return filepath.Join(dir, "secrets", user+".password") }

// EnsurePasswords reads each user's password under dir (PasswordFile),
// making a random one (32 bytes, hex) the first time.
func EnsurePasswords(dir string) (map[string]string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		return nil, fmt.Errorf("create clickhouse secrets dir: %w", err)
	}
	out := map[string]string{}
	for _, user := range []string{UserWriter, UserReader} {
		path := PasswordFile(dir, user)
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			var b [32]byte
			if _, err := rand.Read(b[:]); err != nil {
				return nil, fmt.Errorf("make clickhouse password: %w", err)
			}
			data = []byte(hex.EncodeToString(b[:]))
			err = writeFile(path, data, 0o600)
		}
		if err != nil {
			return nil, fmt.Errorf("clickhouse password of %s: %w", user, err)
		}
		if out[user] = strings.TrimSpace(string(data)); out[user] == "" {
			return nil, fmt.Errorf("clickhouse password of %s in %s: empty", user, path)
		}
	}
	return out, nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// usersXML declares the writer and the reader, each allowed from
// 127.0.0.1 only, with the hashes of their passwords.
func usersXML(passwords map[string]string) string {
	return UsersXML(passwords, "127.0.0.1", "::1")
}

// UsersXML declares the writer and the reader, each allowed from networks
// (addresses or CIDRs, as ClickHouse's <ip>), with the hashes of their
// passwords: a whole users.xml, with no `default` user.
func UsersXML(passwords map[string]string, networks ...string) string {
	var nets strings.Builder
	for _, n := range networks {
		nets.WriteString("<ip>" + n + "</ip>")
	}
	hash := func(user string) string {
		sum := sha256.Sum256([]byte(passwords[user]))
		return hex.EncodeToString(sum[:])
	}
	return fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <readonly><max_memory_usage>4000000000</max_memory_usage><readonly>1</readonly></readonly>
  </profiles>
  <users>
    <%[1]s><password_sha256_hex>%[2]s</password_sha256_hex><networks>%[5]s</networks><profile>default</profile><quota>default</quota></%[1]s>
    <%[3]s><password_sha256_hex>%[4]s</password_sha256_hex><networks>%[5]s</networks><profile>readonly</profile><quota>default</quota></%[3]s>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`, UserWriter, hash(UserWriter), UserReader, hash(UserReader), nets.String())
}
