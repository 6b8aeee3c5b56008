package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/chserver/chservertest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// clickhouse-users prints a users.xml with the writer and the reader, the
// SHA-256 hashes of the passwords it keeps in --secrets-dir (never the
// passwords), allowed from --network (any by default); again, the same
// users; a bad network is refused by value.
func TestClickHouseUsers(t *testing.T) {
	dir := t.TempDir()
	out := clitest.MustRun(t, "clickhouse-users", "--secrets-dir", dir)
	var doc struct {
		Users struct {
			Users []struct {
				XMLName  xml.Name
				Hash     string   `xml:"password_sha256_hex"`
				Networks []string `xml:"networks>ip"`
				Profile  string   `xml:"profile"`
			} `xml:",any"`
		} `xml:"users"`
	}
	require.NoError(t, xml.Unmarshal([]byte(out), &doc), out)
	got := map[string]string{}
	for _, u := range doc.Users.Users {
		pw, err := os.ReadFile(chserver.PasswordFile(dir, u.XMLName.Local))
		require.NoError(t, err, "a password file for %s", u.XMLName.Local)
		st, err := os.Stat(chserver.PasswordFile(dir, u.XMLName.Local))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		sum := sha256.Sum256(bytes.TrimSpace(pw))
		require.Equal(t, hex.EncodeToString(sum[:]), u.Hash, u.XMLName.Local)
		require.NotContains(t, out, strings.TrimSpace(string(pw)), "the password of %s is printed", u.XMLName.Local)
		require.Equal(t, []string{"::/0"}, u.Networks)
		got[u.XMLName.Local] = u.Profile
	}
	require.Equal(t, map[string]string{chserver.UserWriter: "default", chserver.UserReader: "readonly"}, got, "the writer and the reader, no default user")

	again := clitest.MustRun(t, "clickhouse-users", "--secrets-dir", dir, "--network", "10.244.0.0/16", "--network", "fd00::1")
	require.Equal(t, strings.ReplaceAll(out, "<ip>::/0</ip>", "<ip>::ffff:10.244.0.0/112</ip><ip>fd00::1</ip>"), again,
		"the same passwords, other networks (an IPv4 CIDR in its IPv4-mapped form, which ClickHouse 18.16 compares right)")

	code, _, errOut := clitest.Run("clickhouse-users", "--secrets-dir", dir, "--network", "10.244.0.0/33")
	require.NotZero(t, code)
	require.Contains(t, errOut, `"10.244.0.0/33" is neither an IP address nor a CIDR`)
	code, _, errOut = clitest.Run("clickhouse-users")
	require.NotZero(t, code)
	require.Contains(t, errOut, "--secrets-dir")
}

// What clickhouse-users prints is what a real ClickHouse (18.16, as the
// dev stack runs it) loads: written over a running server's users.xml
// (the server reloads it), a network that is not the client's refuses the
// writer, and the default, any network, admits both users again — the
// reader still read-only.
func TestClickHouseUsersLoadInARealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srv := chservertest.Start(t, dir)
	writes := 0
	users := func(args ...string) {
		t.Helper()
		out := clitest.MustRun(t, append([]string{"clickhouse-users", "--secrets-dir", dir}, args...)...)
		path := filepath.Join(dir, "users.xml")
		require.NoError(t, os.WriteFile(path, []byte(out), 0o600))
		// ClickHouse notices a changed file by its modification time in
		// whole seconds: make each write's distinct.
		writes++
		mtime := time.Now().Add(time.Duration(writes) * time.Minute)
		require.NoError(t, os.Chtimes(path, mtime, mtime))
	}
	query := func(dsn, q string) error {
		opts, err := clickhouse.ParseDSN(dsn)
		if err != nil {
			return err
		}
		opts.DialTimeout = 5 * time.Second
		conn, err := clickhouse.Open(opts)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		return conn.Exec(ctx, q)
	}

	users("--network", "203.0.113.7/32")
	testenv.Eventually(t, 30*time.Second, "the writer refused from 127.0.0.1", func() bool {
		return query(srv.DSN("default"), "SELECT 1") != nil
	})
	err := query(srv.DSN("default"), "SELECT 1")
	require.ErrorContains(t, err, "is not allowed to connect from address 127.0.0.1")
	users("--network", "10.0.0.0/8", "--network", "127.0.0.0/8")
	testenv.Eventually(t, 30*time.Second, "the writer admitted from 127.0.0.0/8", func() bool {
		return query(srv.DSN("default"), "SELECT 1") == nil
	})
	users("--network", "10.0.0.0/8")
	testenv.Eventually(t, 30*time.Second, "the writer refused outside 10.0.0.0/8", func() bool {
		return query(srv.DSN("default"), "SELECT 1") != nil
	})
	users()
	testenv.Eventually(t, 30*time.Second, "both users admitted from any network", func() bool {
		return query(srv.DSN("default"), "SELECT 1") == nil && query(srv.ReaderDSN("default"), "SELECT 1") == nil
	})
	require.NoError(t, query(srv.DSN("default"), "CREATE TABLE default.t (x UInt8) ENGINE = Memory"), "the writer writes")
	err = query(srv.ReaderDSN("default"), "INSERT INTO default.t VALUES (1)")
	require.ErrorContains(t, err, "readonly", "the reader does not")
}
