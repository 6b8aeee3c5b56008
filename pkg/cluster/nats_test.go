package cluster_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/cluster"
)

// natsOptions renders overlay, writes its NATS configuration with the
// files it names (the Secrets' contents from a secrets directory) under a
// temporary directory, and parses it as nats-server does.
func natsOptions(t *testing.T, overlay string) (*server.Options, *cluster.Credentials) {
	t.Helper()
	dir := t.TempDir()
	creds, err := cluster.EnsureCredentials(filepath.Join(dir, "secrets"))
	require.NoError(t, err)
	objs, err := cluster.Render(overlay, nil, nil)
	require.NoError(t, err)
	conf := ""
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "nats-config" {
			conf, _ = o.Object["data"].(map[string]any)["nats.conf"].(string)
		}
	}
	require.NotEmpty(t, conf, "%s: the nats-config ConfigMap", overlay)
	// The mounts of the StatefulSet: the Secrets' files at these paths.
	conf = strings.NewReplacer("/etc/nats/tls/", filepath.Join(dir, "tls")+"/", "/data/jetstream", filepath.Join(dir, "js")).Replace(conf)
	files := map[string][]byte{"tls/tls.crt": creds.NATSCert, "tls/tls.key": creds.NATSKey, "tls/ca.crt": creds.CACert,
		"auth/authorization.conf": []byte(creds.NATSConfig), "nats.conf": []byte(conf)}
	for name, b := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	t.Setenv("POD_NAME", "nats-0")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	require.NoError(t, err, "%s's nats.conf", overlay)
	return opts, creds
}

// The NATS servers of both overlays require TLS of their clients; the
// testbed's three servers also route to each other only over TLS, each
// presenting and requiring a certificate of the cluster's CA, and the
// certificate holds every route's host name — so a route, which carries
// every message, is neither readable nor joinable without the CA's
// signature.
func TestNATSRequiresTLSOnClientsAndRoutes(t *testing.T) {
	for _, overlay := range cluster.Overlays {
		t.Run(overlay, func(t *testing.T) {
			opts, creds := natsOptions(t, overlay)
			require.NotNil(t, opts.TLSConfig, "clients: TLS")
			require.False(t, opts.AllowNonTLS, "clients: TLS only")
			if overlay == "single-node" {
				require.Empty(t, opts.Routes, "one server")
				return
			}
			require.Len(t, opts.Routes, 3)
			require.NotNil(t, opts.Cluster.TLSConfig, "routes: TLS")
			require.Equal(t, tls.RequireAndVerifyClientCert, opts.Cluster.TLSConfig.ClientAuth, "routes: a verified certificate both ways")
			block, _ := pem.Decode(creds.NATSCert)
			cert, err := x509.ParseCertificate(block.Bytes)
			require.NoError(t, err)
			for _, r := range opts.Routes {
				for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
					_, err := cert.Verify(x509.VerifyOptions{Roots: opts.Cluster.TLSConfig.RootCAs, DNSName: r.Hostname(), KeyUsages: []x509.ExtKeyUsage{usage}})
					require.NoError(t, err, "route %s", r)
				}
			}
		})
	}
}

// redirect dials every NATS address at addr: the manifests' URL
// (tls://nats.greenflow.svc:4222) names a Service this machine cannot
// resolve, and the client must still check the certificate under that
// name, as in the cluster.
type redirect struct{ addr string }

func (r redirect) Dial(network, _ string) (net.Conn, error) { return net.Dial(network, r.addr) }

// A service connects to the single-node overlay's NATS server — run from
// its rendered nats.conf with up's Secrets — exactly as the manifests
// configure it (greenflow-config's NATS_URL, its nkey seed, --nats-ca-file
// with the cluster's CA): over TLS, checking the server's certificate
// under the Service's name. A client trusting another CA refuses the
// server (its seed never signs anything for it); a client asking for no
// TLS (nats://) gets it anyway, as the server requires it, and without
// the CA refuses the server too — nothing crosses in the clear.
func TestServicesReachNATSOnlyOverVerifiedTLS(t *testing.T) {
	opts, creds := natsOptions(t, "single-node")
	opts.Host, opts.Port, opts.HTTPPort, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, 0, true, true
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(10*time.Second))
	dial := nats.SetCustomDialer(redirect{ns.Addr().String()})

	objs, err := cluster.Render("single-node", nil, nil)
	require.NoError(t, err)
	natsURL := ""
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "greenflow-config" && o.GetNamespace() == cluster.Namespace {
			natsURL, _ = o.Object["data"].(map[string]any)["NATS_URL"].(string)
		}
	}
	require.True(t, strings.HasPrefix(natsURL, "tls://nats.greenflow.svc:"), natsURL)
	seed := ""
	for _, u := range creds.NATSUsers {
		if u.Name == "scheduler" {
			seed = u.SeedFile
		}
	}
	require.NotEmpty(t, seed)
	connect := func(url, caFile string) error {
		o, err := bus.Credentials{NKeyFile: seed, CAFile: caFile}.Options()
		require.NoError(t, err)
		nc, err := nats.Connect(url, append(o, dial, nats.Timeout(5*time.Second), nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
		}
		return err
	}

	require.NoError(t, connect(natsURL, cluster.CAFile(creds.Dir)), "as the manifests configure the scheduler")
	other, err := cluster.EnsureCredentials(filepath.Join(t.TempDir(), "other"))
	require.NoError(t, err)
	require.ErrorContains(t, connect(natsURL, cluster.CAFile(other.Dir)), "certificate signed by unknown authority")
	err = connect(strings.Replace(natsURL, "tls://", "nats://", 1), "")
	require.ErrorContains(t, err, "tls", "a client without TLS")
	t.Logf("a client without TLS: %v", err)
}
