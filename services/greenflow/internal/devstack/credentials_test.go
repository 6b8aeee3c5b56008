package devstack_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/kafkasasl"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// The dev stack's own ClickHouse and NATS get generated credentials, kept
// in files only the stack's user reads: the state dir and everything in it,
// the servers' own files included, is the user's only; endpoints.json
// names the ClickHouse DSN without its password; the CLI's DSN (from
// ReadEndpoints) is the read-only user's, which the real server refuses
// writes; the services write as the writer.
func TestDevStackCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := devstacktest.Options(t)
	o.ClickHouseDSN = "" // its own clickhouse-server child in the state dir
	st := devstacktest.New(t, o)

	mode := func(path string) os.FileMode {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		return fi.Mode().Perm()
	}
	require.Equal(t, os.FileMode(0o700), mode(filepath.Join(o.StateDir, devstack.NATSDir)))
	for _, user := range bus.Users() {
		require.Equal(t, os.FileMode(0o600), mode(devstack.NATSCreds(o.StateDir, user).NKeyFile), user)
	}
	for _, f := range []string{devstack.ClickHouseReaderDSNFile, devstack.ClickHouseWriterDSNFile, devstack.TokenFile} {
		require.Equal(t, os.FileMode(0o600), mode(filepath.Join(o.StateDir, f)), f)
	}

	require.Equal(t, os.FileMode(0o700), mode(o.StateDir))
	files := 0
	require.NoError(t, filepath.WalkDir(o.StateDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 || d.Type()&os.ModeSocket != 0 {
			return err
		}
		files++
		require.Zero(t, mode(path)&0o077, "%s is %s: readable by others than the stack's user", path, mode(path))
		return nil
	}))
	require.Greater(t, files, 20, "the walk saw the servers' files")

	// The stack's Kafka refuses a client without the credentials in its
	// state dir, and serves one with them.
	ping := func(opts ...kgo.Opt) error {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(st.Endpoints.KafkaBrokers...)}, opts...)...)
		require.NoError(t, err)
		defer cl.Close()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return cl.Ping(pctx)
	}
	require.Error(t, ping(), "an unauthenticated Kafka client")
	require.Equal(t, filepath.Join(o.StateDir, devstack.KafkaSASLFile), st.Endpoints.KafkaSASLFile)
	kafkaAuth, err := kafkasasl.Flag{File: st.Endpoints.KafkaSASLFile}.Options()
	require.NoError(t, err)
	require.NoError(t, ping(kafkaAuth...), "a client with the stack's Kafka credentials")

	raw, err := os.ReadFile(filepath.Join(o.StateDir, devstack.EndpointsFile))
	require.NoError(t, err)
	writer, err := url.Parse(st.Endpoints.ClickHouseDSN)
	require.NoError(t, err)
	password, _ := writer.User.Password()
	require.NotEmpty(t, password)
	require.Equal(t, chserver.UserWriter, writer.User.Username())
	require.NotContains(t, string(raw), password, "endpoints.json holds no password")

	ep, err := devstack.ReadEndpoints(o.StateDir)
	require.NoError(t, err)
	reader, err := url.Parse(ep.ClickHouseReaderDSN)
	require.NoError(t, err)
	require.Equal(t, chserver.UserReader, reader.User.Username())
	ro, err := store.OpenReadOnly(ctx, ep.ClickHouseReaderDSN, zap.NewNop())
	require.NoError(t, err)
	defer ro.Close()
	var n uint64
	require.NoError(t, ro.Conn().QueryRow(ctx, "SELECT count() FROM schema_migrations").Scan(&n), "the reader queries")
	err = ro.Conn().Exec(ctx, "INSERT INTO schema_migrations SELECT * FROM schema_migrations LIMIT 1")
	require.Error(t, err)
	require.Contains(t, strings.ToLower(err.Error()), "readonly")
	_, err = store.Open(ctx, ep.ClickHouseReaderDSN, zap.NewNop())
	require.Error(t, err, "the reader cannot migrate")
}

// TestARelativeStateDirIsFoundFromAnywhere: a stack started with a relative
// --state-dir (the README's `.state/demo`) is found by a CLI run from
// another directory — the files endpoints.json names resolve there too (a
// trial's `greenflow token list --state-dir gf/.state/demo` did not find it).
func TestARelativeStateDirIsFoundFromAnywhere(t *testing.T) {
	parent := t.TempDir()
	t.Chdir(parent)
	o := devstacktest.Options(t)
	o.StateDir = filepath.Join("rel", "state")
	devstacktest.New(t, o)

	t.Chdir(t.TempDir())
	e, err := devstack.ReadEndpoints(filepath.Join(parent, "rel", "state"))
	require.NoError(t, err)
	require.True(t, filepath.IsAbs(e.ClickHouseReaderDSNFile), e.ClickHouseReaderDSNFile)
	require.Contains(t, e.ClickHouseReaderDSN, "clickhouse://", "the DSN read from the file endpoints.json names")
}
