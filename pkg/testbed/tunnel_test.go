package testbed_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// apiStandIn is the control node's k3s API as a laptop outside Grid'5000
// cannot reach it: HTTPS with a certificate for the node's FQDN only (as
// `--tls-san <control>` makes it; no 127.0.0.1), answering /version. It
// answers /version, and takes server-side applies (PATCH, echoed back as
// the object), recording their paths and bodies. It returns the server,
// the kubeconfig k3s writes (CA, a token) and the applies so far.
func apiStandIn(t *testing.T, fqdn string) (*httptest.Server, string, func() map[string]string) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "k3s-server-ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "k3s"}, DNSNames: []string{fqdn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	var mu sync.Mutex
	applied := map[string]string{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer abc" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/version":
			fmt.Fprint(w, `{"major":"1","minor":"33","gitVersion":"v1.33.1+k3s1"}`)
		case r.Method == http.MethodPatch && r.Header.Get("Content-Type") == "application/apply-patch+yaml":
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			applied[r.URL.Path] = string(body)
			mu.Unlock()
			_, _ = w.Write(body)
		default:
			http.Error(w, "not found", http.StatusNotFound)
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake refused below is expected
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority-data: %s, server: "https://127.0.0.1:6443"}
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
users:
- name: default
  user: {token: abc}
`, encodeB64(caPEM))
	return srv, kc, func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(applied)
	}
}

// From outside Grid'5000 the control node's API is reached through an SSH
// local forward of the access gateway (sshtest stands in for it: a
// direct-tcpip channel to taurus-1…:6443 goes to the API stand-in). The
// kubeconfig names https://127.0.0.1:<port> and, as tls-server-name, the
// control node's FQDN: the certificate verifies (without the name it does
// not — it holds no 127.0.0.1). The reservation records the tunnel while
// it is open (testbed status), and it ends when closed.
func TestTunnelToTheClusterAPIThroughTheGateway(t *testing.T) {
	w := newWorld(t)
	w.api.Script(g5ktest.Script{})
	m := w.manager(t, "host-a", w.clk)
	ctx := context.Background()
	r, err := m.Reserve(ctx, spec(t), nil)
	require.NoError(t, err)
	control := r.Hosts(testbed.RoleControl)[0]

	api, k3sKC, _ := apiStandIn(t, control)
	sshw := newSSHWorld(t, k3sKC, nil)
	sshw.srv.Forward(control+":6443", api.Listener.Addr().String())

	g := &testbed.GatewayTunnel{Manager: m, Runner: func(s testbed.Spec) (*testbed.SSHRunner, error) { return sshw.runner(t, s), nil },
		Logger: testenv.Logger(t)}
	ep, err := g.Connect(ctx, r)
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	require.Equal(t, "https://"+g.Addr(), ep.Server)
	require.Regexp(t, `^https://127\.0\.0\.1:\d+$`, ep.Server)
	require.Equal(t, control, ep.TLSServerName)

	// The bootstrap's kubeconfig through the tunnel reaches the API and
	// verifies its certificate.
	kc, err := testbed.RewriteServer([]byte(k3sKC), ep)
	require.NoError(t, err)
	cfg, err := clientcmd.Load(kc)
	require.NoError(t, err)
	require.Equal(t, ep.Server, cfg.Clusters["default"].Server)
	require.Equal(t, control, cfg.Clusters["default"].TLSServerName)
	v, err := serverVersion(kc)
	require.NoError(t, err)
	require.Equal(t, "v1.33.1+k3s1", v)
	require.Contains(t, sshw.srv.Forwarded(), control+":6443", "through the gateway's direct-tcpip channel")

	noName, err := testbed.RewriteServer([]byte(k3sKC), testbed.APIEndpoint{Server: ep.Server})
	require.NoError(t, err)
	_, err = serverVersion(noName)
	require.ErrorContains(t, err, "x509", "127.0.0.1 is not a name the certificate holds: tls-server-name is what makes it verify")

	// testbed status reads the record and finds the tunnel up.
	got, err := m.Get(ctx, r.Name)
	require.NoError(t, err)
	require.Equal(t, g.Addr(), got.Tunnel)
	require.NoError(t, testbed.TunnelUp(got.Tunnel, time.Second))

	// It ends with the command: closed, nothing listens and the record
	// says no tunnel.
	addr := g.Addr()
	require.NoError(t, g.Close())
	require.Error(t, testbed.TunnelUp(addr, time.Second))
	_, err = serverVersion(kc)
	require.Error(t, err)
	got, err = m.Get(ctx, r.Name)
	require.NoError(t, err)
	require.Empty(t, got.Tunnel)
}

// The plan's k3s server puts the control node's FQDN in its certificate,
// which the kubeconfig names (directly or as the tunnel's tls-server-name).
func TestK3sServerCertificateNamesTheControlNode(t *testing.T) {
	r := reservation(t)
	var server string
	for _, st := range testbed.BootstrapPlan(r.Spec, r.Nodes, "") {
		if st.Why == "k3s server" {
			server = st.Cmd
		}
	}
	require.Contains(t, server, "--tls-san taurus-1.lyon.grid5000.fr ")
	require.Equal(t, testbed.APIEndpoint{Server: "https://taurus-1.lyon.grid5000.fr:6443"}, testbed.DirectEndpoint("taurus-1.lyon.grid5000.fr"))
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// testbed up from outside Grid'5000, up to the deployment: the
// reservation, the tunnel opened once the control node is known, k3s
// bootstrapped over SSH through the gateway, the nodes waited for and the
// reservation handed to the platform — the last two through the tunnel,
// with the kubeconfig Up returns.
func TestPlatformUpFromOutsideThroughTheTunnel(t *testing.T) {
	w := newWorld(t)
	w.api.Script(g5ktest.Script{})
	m := w.manager(t, "host-a", w.clk)
	control := "taurus-1.lyon.grid5000.fr"
	api, k3sKC, applied := apiStandIn(t, control)
	sshw := newSSHWorld(t, k3sKC, nil)
	sshw.srv.Forward(control+":6443", api.Listener.Addr().String())
	g := &testbed.GatewayTunnel{Manager: m, Runner: func(s testbed.Spec) (*testbed.SSHRunner, error) { return sshw.runner(t, s), nil },
		Logger: testenv.Logger(t)}
	t.Cleanup(func() { _ = g.Close() })
	var waitedVia string
	p := &testbed.Platform{Manager: m, Connect: g.Connect, Logger: testenv.Logger(t),
		Runner: func(s testbed.Spec) (testbed.Runner, error) { return sshw.runner(t, s), nil },
		// The nodes are Ready once the API answers through the tunnel.
		Waiter: waiterFunc(func(_ context.Context, kc []byte, _ map[string]string) error {
			if _, err := serverVersion(kc); err != nil {
				return err
			}
			cfg, err := clientcmd.Load(kc)
			if err != nil {
				return err
			}
			waitedVia = cfg.Clusters["default"].Server + " " + cfg.Clusters["default"].TLSServerName
			return nil
		})}
	r, kc, err := p.Up(context.Background(), spec(t), nil)
	require.NoError(t, err)
	require.Equal(t, "https://"+g.Addr()+" "+control, waitedVia, "waited through the tunnel, verifying the control node's name")
	cfg, err := clientcmd.Load(kc)
	require.NoError(t, err)
	require.Equal(t, "https://"+g.Addr(), cfg.Clusters["default"].Server)
	require.Equal(t, control, cfg.Clusters["default"].TLSServerName)
	handed := applied()["/api/v1/namespaces/greenflow/configmaps/greenflow-testbed"]
	require.Contains(t, handed, r.ID, "the reservation handed to the platform through the tunnel")
	// The collectors' sources, and the API's address as the control node
	// resolves it (not as this machine would), for the Deployer's policy.
	require.Contains(t, applied()["/api/v1/namespaces/greenflow-collector/configmaps/greenflow-collector-sources"], "taurus-2.yaml")
	require.Equal(t, []string{"172.16.63.5/32"}, r.KwollectCIDRs)
	got, err := m.Get(context.Background(), r.Name)
	require.NoError(t, err)
	require.Equal(t, g.Addr(), got.Tunnel)
	require.NoError(t, m.Release(context.Background(), r.Name, "test over"))
}

// serverVersion asks the API server of kubeconfig its version.
func serverVersion(kubeconfig []byte) (string, error) {
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return "", err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return "", err
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return "", err
	}
	return v.GitVersion, nil
}
