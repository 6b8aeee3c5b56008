package chserver_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/chserver/chservertest"
)

func connect(t *testing.T, dsn string) driver.Conn {
	t.Helper()
	opts, err := clickhouse.ParseDSN(dsn)
	require.NoError(t, err)
	opts.DialTimeout = 5 * time.Second
	conn, err := clickhouse.Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// The server has a writer and a read-only user, both with generated
// passwords, and nobody else: the real server refuses the reader's writes
// and schema changes, and a connection without the password.
func TestUsersAndPasswords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srv := chservertest.Start(t, dir)

	w := connect(t, srv.DSN("default"))
	require.NoError(t, w.Exec(ctx, "CREATE DATABASE IF NOT EXISTS sec"))
	require.NoError(t, w.Exec(ctx, "CREATE TABLE sec.t (x UInt32) ENGINE = MergeTree ORDER BY x"))
	require.NoError(t, w.Exec(ctx, "INSERT INTO sec.t SELECT 1"), "the writer inserts")

	r := connect(t, srv.ReaderDSN("sec"))
	var n uint64
	require.NoError(t, r.QueryRow(ctx, "SELECT count() FROM sec.t").Scan(&n))
	require.Equal(t, uint64(1), n, "the reader reads")
	// A client that sends settings with its queries (clickhouse-go does for
	// a deadline, Grafana's plugin always) still reads; the settings are
	// ignored.
	var limit string
	withSettings := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_memory_usage": 0}))
	require.NoError(t, r.QueryRow(withSettings, "SELECT value FROM system.settings WHERE name = 'max_memory_usage'").Scan(&limit))
	require.Equal(t, "4000000000", limit, "a setting sent with a query lifts no limit")
	for _, q := range []string{"INSERT INTO sec.t SELECT 2", "CREATE TABLE sec.u (x UInt32) ENGINE = Memory", "DROP TABLE sec.t",
		"CREATE DATABASE other", "ALTER TABLE sec.t DELETE WHERE x = 1",
		// Table functions read the server's files and reach any host from
		// it; settings would lift the profile's limits.
		"SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')", "SELECT * FROM file('/etc/passwd', CSV, 'a String')",
		"SELECT * FROM remote('127.0.0.1', sec.t)", "SELECT * FROM numbers(3)", "SET max_memory_usage = 0",
		"SELECT count() FROM sec.t SETTINGS max_memory_usage = 0", "SET readonly = 0"} {
		err := r.Exec(ctx, q)
		require.Error(t, err, "the reader ran %q", q)
		require.Contains(t, strings.ToLower(err.Error()), "readonly", q)
	}
	require.NoError(t, w.QueryRow(ctx, "SELECT count() FROM sec.t").Scan(&n))
	require.Equal(t, uint64(1), n, "nothing the reader tried changed the table")

	port := srv.Base()[strings.LastIndex(srv.Base(), ":")+1:]
	for name, dsn := range map[string]string{
		"default, no password":   "clickhouse://127.0.0.1:" + port + "/default",
		"writer, no password":    "clickhouse://" + chserver.UserWriter + "@127.0.0.1:" + port + "/default",
		"writer, wrong password": "clickhouse://" + chserver.UserWriter + ":nope@127.0.0.1:" + port + "/default",
	} {
		err := connect(t, dsn).Ping(ctx)
		require.Error(t, err, name)
		// 192 unknown user, 193 wrong password, 194 password required (18.16); 516 on newer servers.
		require.Regexp(t, `code: (19[234]|516)`, err.Error(), name)
	}

	for _, user := range []string{chserver.UserWriter, chserver.UserReader} {
		fi, err := os.Stat(chserver.PasswordFile(dir, user))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), user)
		pw, err := os.ReadFile(chserver.PasswordFile(dir, user))
		require.NoError(t, err)
		users, err := os.ReadFile(filepath.Join(dir, "users.xml"))
		require.NoError(t, err)
		require.NotContains(t, string(users), string(pw), "users.xml holds hashes only")
	}
}

// A restart keeps the passwords: the dev stack's DSNs stay valid.
func TestPasswordsSurviveRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srv := chservertest.Start(t, dir)
	first := srv.ReaderDSN("default")
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Stop(), "stopping a stopped server returns at once")
	srv = chservertest.Start(t, dir)
	before, err := url.Parse(first)
	require.NoError(t, err)
	after, err := url.Parse(srv.ReaderDSN("default"))
	require.NoError(t, err)
	require.Equal(t, before.User.String(), after.User.String())
	require.NoError(t, connect(t, srv.ReaderDSN("default")).Ping(ctx))
}
