package natsembed_test

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// With TLS on, a client that trusts the server's CA connects and
// authenticates; one that does not trust it is refused.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certs := testenv.NewTLS(t)
	caFile, serverCert := certs.CAFile, certs.Cert
	users, err := natsembed.EnsureUsers(filepath.Join(dir, "users"))
	require.NoError(t, err)
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(), Users: users,
		TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}})
	require.NoError(t, err)
	defer ns.Shutdown()

	creds := bus.Credentials{NKeyFile: natsembed.SeedFile(filepath.Join(dir, "users"), string(events.ServiceAnalyzer)), CAFile: caFile}
	opts, err := creds.Options()
	require.NoError(t, err)
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	require.NoError(t, err)
	require.True(t, nc.TLSRequired())
	nc.Close()

	creds.CAFile = ""
	opts, err = creds.Options()
	require.NoError(t, err)
	_, err = nats.Connect(ns.ClientURL(), append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}), nats.MaxReconnects(0))...)
	require.ErrorContains(t, err, "certificate signed by unknown authority")
}
