package cluster_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/greenflow/greenflow/pkg/cluster"
)

// secretsOf returns the Secrets up would create from a secrets directory,
// by name.
func secretsOf(t *testing.T, dir string) map[string]*corev1.Secret {
	t.Helper()
	c, err := cluster.EnsureCredentials(dir)
	require.NoError(t, err)
	list, err := c.Secrets()
	require.NoError(t, err)
	out := map[string]*corev1.Secret{}
	for _, s := range list {
		out[s.Namespace+"/"+s.Name] = s
	}
	return out
}

// get answers whether a client trusting caPEM, asking for serverName,
// completes an HTTPS request to srv.
func get(t *testing.T, srv *httptest.Server, caPEM []byte, serverName string) error {
	t.Helper()
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL + "/healthz")
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	return nil
}

// serve serves HTTPS with the key pair of Secret s, as the service does
// with --http-tls-cert-file and --http-tls-key-file.
func serve(t *testing.T, s *corev1.Secret) *httptest.Server {
	t.Helper()
	pair, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	require.NoError(t, err, s.Name)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Each API server's certificate, as cluster up puts it in its Secret,
// serves HTTPS that a client trusting the cluster's CA (the Secret
// greenflow-nats-ca, the secrets directory's tls/ca.crt) verifies under
// each of the names the client uses — the Service's in-cluster names and
// port-forward's loopback addresses — and under no other service's name;
// a client trusting another CA refuses it.
func TestTheAPIServersCertificatesVerifyForTheirNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	secrets := secretsOf(t, dir)
	caPEM := secrets["greenflow/greenflow-nats-ca"].Data["ca.crt"]
	require.NotEmpty(t, caPEM)
	onDisk, err := os.ReadFile(cluster.CAFile(dir))
	require.NoError(t, err)
	require.Equal(t, caPEM, onDisk, "the CA the printed instructions name")
	other := secretsOf(t, filepath.Join(t.TempDir(), "other")) // another cluster's CA
	otherCA := other["greenflow/greenflow-nats-ca"].Data["ca.crt"]

	require.Len(t, cluster.APIServers, 3)
	for _, svc := range cluster.APIServers {
		s, ok := secrets["greenflow/greenflow-"+svc+"-tls"]
		require.True(t, ok, "greenflow-%s-tls among the Secrets", svc)
		require.Equal(t, corev1.SecretTypeTLS, s.Type, s.Name)
		srv := serve(t, s)
		for _, name := range []string{svc + ".greenflow.svc", svc + ".greenflow.svc.cluster.local", svc + ".greenflow", svc, "localhost", "127.0.0.1", "::1"} {
			require.NoError(t, get(t, srv, caPEM, name), "%s's certificate for %s", svc, name)
		}
		for _, name := range []string{"provisioner.greenflow.svc", "nats.greenflow.svc", svc + ".default.svc", "example.com"} {
			require.ErrorContains(t, get(t, srv, caPEM, name), "certificate is valid for", "%s's certificate for %s", svc, name)
		}
		require.ErrorContains(t, get(t, srv, otherCA, svc+".greenflow.svc"), "certificate signed by unknown authority")
	}
	// NATS keeps its own names.
	nats := serve(t, secrets["greenflow/greenflow-nats-tls"])
	require.NoError(t, get(t, nats, caPEM, "nats.greenflow.svc"))
	require.NoError(t, get(t, nats, caPEM, "nats-0.nats-headless.greenflow.svc"))
	require.Error(t, get(t, nats, caPEM, "scheduler.greenflow.svc"))
}

// Up again keeps every certificate; one that lacks a name it must answer
// to (made by an older GreenFlow) or is about to expire is issued anew by
// the same CA, and only that one.
func TestUpKeepsGoodCertificatesAndRenewsTheRest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	first := secretsOf(t, dir)
	again := secretsOf(t, dir)
	for name, s := range first {
		require.Equal(t, s.Data, again[name].Data, "%s kept", name)
	}

	tlsDir := filepath.Join(dir, "tls")
	copyFile := func(from, to string) {
		b, err := os.ReadFile(filepath.Join(tlsDir, from))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(tlsDir, to), b, 0o600))
	}
	// The scheduler's pair replaced by a good pair for other names.
	copyFile("nats.crt", "scheduler.crt")
	copyFile("nats.key", "scheduler.key")
	// The analyzer's: the right names, but 10 days left.
	writeCert(t, tlsDir, "analyzer", []string{"analyzer.greenflow.svc"}, 10*24*time.Hour)

	renewed := secretsOf(t, dir)
	caPEM := renewed["greenflow/greenflow-nats-ca"].Data["ca.crt"]
	require.Equal(t, first["greenflow/greenflow-nats-ca"].Data, renewed["greenflow/greenflow-nats-ca"].Data, "the same CA")
	for _, svc := range []string{"scheduler", "analyzer"} {
		s := renewed["greenflow/greenflow-"+svc+"-tls"]
		require.NotEqual(t, first["greenflow/greenflow-"+svc+"-tls"].Data, s.Data, "%s issued anew", svc)
		require.NoError(t, get(t, serve(t, s), caPEM, svc+".greenflow.svc"))
		block, _ := pem.Decode(s.Data[corev1.TLSCertKey])
		cert, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		require.Greater(t, time.Until(cert.NotAfter), 365*24*time.Hour, "%s valid for years again", svc)
	}
	for _, name := range []string{"greenflow/greenflow-console-tls", "greenflow/greenflow-nats-tls"} {
		require.Equal(t, first[name].Data, renewed[name].Data, "%s kept", name)
	}
}

// writeCert issues, with the secrets directory's CA, a certificate for
// dns valid for left, as tls/<name>.crt and .key.
func writeCert(t *testing.T, tlsDir, name string, dns []string, left time.Duration) {
	t.Helper()
	read := func(f string) *pem.Block {
		b, err := os.ReadFile(filepath.Join(tlsDir, f))
		require.NoError(t, err)
		block, _ := pem.Decode(b)
		require.NotNil(t, block, f)
		return block
	}
	ca, err := x509.ParseCertificate(read("ca.crt").Bytes)
	require.NoError(t, err)
	caKey, err := x509.ParseECPrivateKey(read("ca.key").Bytes)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: dns[0]}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(left),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tlsDir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(tlsDir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
}
