package kafkasasl_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/kafkasasl"
)

// A broker that requires SASL refuses a client without credentials and
// one with a wrong password, and serves the one with the file's.
func TestBrokerWithSASL(t *testing.T) {
	creds, err := kafkasasl.Generate("greenflow")
	require.NoError(t, err)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(creds.Mechanism, creds.User, creds.Password))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	file := filepath.Join(t.TempDir(), "kafka-sasl.yaml")
	require.NoError(t, kafkasasl.Write(file, creds))
	fi, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	ping := func(opts ...kgo.Opt) error {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	require.Error(t, ping(), "a client without credentials")
	wrong := creds
	wrong.Password = "guess"
	require.Error(t, ping(wrong.Option()), "a wrong password")
	opts, err := kafkasasl.Flag{File: file}.Options()
	require.NoError(t, err)
	require.NoError(t, ping(opts...), "the file's credentials")
}

// A bad file is an error naming the flag, the file and every bad field.
func TestReadNamesEveryProblem(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kafka-sasl.yaml")
	require.NoError(t, os.WriteFile(file, []byte("mechanism: GSSAPI\nuser: \"\"\n"), 0o600))
	_, err := kafkasasl.Read(file)
	require.ErrorContains(t, err, "--kafka-sasl-file "+file)
	require.ErrorContains(t, err, `mechanism: got "GSSAPI", expected SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN`)
	require.ErrorContains(t, err, "user: empty")
	require.ErrorContains(t, err, "password: empty")
	_, err = kafkasasl.Flag{File: filepath.Join(t.TempDir(), "missing")}.Options()
	require.ErrorContains(t, err, "read --kafka-sasl-file")
	opts, err := kafkasasl.Flag{}.Options()
	require.NoError(t, err)
	require.Empty(t, opts)
}
