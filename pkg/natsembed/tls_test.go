package natsembed_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/natsembed"
)

// With TLS on, a client that trusts the server's CA connects and
// authenticates; one that does not trust it is refused.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := testCA(t, dir)
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

// testCA writes a new CA's certificate to dir and returns its path and a
// server certificate it signed for 127.0.0.1.
func testCA(t *testing.T, dir string) (string, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "greenflow test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
