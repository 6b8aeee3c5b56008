package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/natsembed"
)

// The namespaces of the base (deploy/base/namespace.yaml).
const (
	Namespace          = "greenflow"
	CollectorNamespace = "greenflow-collector"
)

// services connect to NATS and ClickHouse, each with a Secret of its own.
var services = []string{"scheduler", "provisioner", "load-generator", "analyzer", "energy-collector", "console"}

// Credentials are what a cluster's Secrets are made from. They are made
// once in the secrets directory (0700, files 0600) and kept: running up
// again reuses them, so nothing rotates by accident, and the directory is
// the operator's copy (the admin token is there).
type Credentials struct {
	Dir string
	// NATS users (seeds in Dir/nats) and the server's authorization block.
	NATSUsers  []natsembed.User
	NATSConfig string
	// ClickHouse passwords (Dir/clickhouse) and the server's users.xml.
	ClickHousePasswords map[string]string
	UsersXML            string
	// CA and the NATS servers' certificate (Dir/tls).
	CACert, NATSCert, NATSKey []byte
	// AdminToken is the first admin API token; the scheduler adopts it.
	AdminToken string
	// SessionKey seals the console's session cookies (Dir/console-session.key):
	// kept, so a console restarted or scaled keeps its users signed in.
	SessionKey string
}

// AdminTokenFile is where the admin token is kept in the secrets directory.
func AdminTokenFile(dir string) string { return filepath.Join(dir, "admin.token") }

// ReaderPasswordFile is where the ClickHouse reader's password is kept in
// the secrets directory (chserver.EnsurePasswords' layout).
func ReaderPasswordFile(dir string) string {
	return chserver.PasswordFile(filepath.Join(dir, "clickhouse"), chserver.UserReader)
}

// EnsureCredentials makes what is missing in dir and reads the rest.
func EnsureCredentials(dir string) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets dir: %w", err)
	}
	c := &Credentials{Dir: dir}
	var err error
	if c.NATSUsers, err = natsembed.EnsureUsers(filepath.Join(dir, "nats")); err != nil {
		return nil, err
	}
	c.NATSConfig = natsembed.ServerConfig(c.NATSUsers)
	if c.ClickHousePasswords, err = chserver.EnsurePasswords(filepath.Join(dir, "clickhouse")); err != nil {
		return nil, err
	}
	c.UsersXML = chserver.UsersXML(c.ClickHousePasswords, "::/0")
	if c.CACert, c.NATSCert, c.NATSKey, err = ensureTLS(filepath.Join(dir, "tls")); err != nil {
		return nil, err
	}
	if c.AdminToken, err = ensureToken(AdminTokenFile(dir)); err != nil {
		return nil, err
	}
	if c.SessionKey, err = ensureSessionKey(filepath.Join(dir, "console-session.key")); err != nil {
		return nil, err
	}
	return c, nil
}

// ensureSessionKey reads the console's session key, or draws one: 32
// random bytes, hex (the console reads a text file of 32+ bytes).
func ensureSessionKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the console's session key: %w", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	plain := hex.EncodeToString(key)
	return plain, writeNew(path, []byte(plain+"\n"))
}

func ensureToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	plain, err := auth.Draw()
	if err != nil {
		return "", err
	}
	return plain, writeNew(path, []byte(plain+"\n"))
}

// writeNew writes a file only its user may read.
func writeNew(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// natsNames are the names the NATS servers answer to: the client Service
// and each server's address on the headless Service (cluster routes).
var natsNames = []string{
	"nats", "nats." + Namespace, "nats." + Namespace + ".svc", "nats." + Namespace + ".svc.cluster.local",
	"*.nats-headless." + Namespace + ".svc", "*.nats-headless." + Namespace + ".svc.cluster.local",
}

// ensureTLS makes a CA and the NATS servers' certificate signed by it
// (ECDSA P-256; the CA for 10 years, the certificate for 2), once.
func ensureTLS(dir string) (caPEM, certPEM, keyPEM []byte, err error) {
	paths := []string{filepath.Join(dir, "ca.crt"), filepath.Join(dir, "nats.crt"), filepath.Join(dir, "nats.key")}
	var have [3][]byte
	missing := false
	for i, p := range paths {
		if have[i], err = os.ReadFile(p); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, nil, nil, err
			}
			missing = true
		}
	}
	if !missing {
		return have[0], have[1], have[2], nil
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "GreenFlow cluster CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "nats." + Namespace + ".svc"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0), DNSNames: natsNames,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	// The CA's key stays with the operator (to sign a renewed certificate).
	for p, b := range map[string][]byte{paths[0]: caPEM, paths[1]: certPEM, paths[2]: keyPEM,
		filepath.Join(dir, "ca.key"): pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER})} {
		if err := writeNew(p, b); err != nil {
			return nil, nil, nil, err
		}
	}
	return caPEM, certPEM, keyPEM, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// ClickHouseAddr is the ClickHouse Service the components deploy.
const ClickHouseAddr = "clickhouse." + Namespace + ".svc:9000"

// Secrets are the Secrets the manifests mount (README, Security), made
// from c: one per service (its NATS seed and ClickHouse DSN; the
// scheduler's also the admin token it adopts; the console's the reader's
// DSN, not the writer's, and its session key), the CA in both namespaces,
// NATS's certificate and authorization block, ClickHouse's users.xml and
// the reader's DSN (for dashboards and the CLI).
func (c *Credentials) Secrets() ([]*corev1.Secret, error) {
	seed := map[string][]byte{}
	for _, u := range c.NATSUsers {
		b, err := os.ReadFile(u.SeedFile)
		if err != nil {
			return nil, fmt.Errorf("read the NATS seed of %s: %w", u.Name, err)
		}
		seed[u.Name] = b
	}
	dsn := func(user string) []byte {
		return []byte(fmt.Sprintf("clickhouse://%s:%s@%s/greenflow", user, c.ClickHousePasswords[user], ClickHouseAddr))
	}
	secret := func(ns, name string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/part-of": "greenflow",
				"app.kubernetes.io/managed-by": "greenflow-cluster"}}, Data: data}
	}
	var out []*corev1.Secret
	for _, svc := range services {
		if seed[svc] == nil {
			return nil, fmt.Errorf("no NATS user %s in the contract (pkg/bus)", svc)
		}
		ns := Namespace
		if svc == "energy-collector" {
			ns = CollectorNamespace
		}
		data := map[string][]byte{"nats.nk": seed[svc], "clickhouse.dsn": dsn(chserver.UserWriter)}
		switch svc {
		case "scheduler":
			data["admin.token"] = []byte(c.AdminToken + "\n")
		case "console":
			// It only reads the store: the reader's DSN.
			data["clickhouse.dsn"] = dsn(chserver.UserReader)
			data["session.key"] = []byte(c.SessionKey + "\n")
		}
		out = append(out, secret(ns, "greenflow-"+svc+"-credentials", data))
	}
	out = append(out,
		secret(Namespace, "greenflow-nats-ca", map[string][]byte{"ca.crt": c.CACert}),
		secret(CollectorNamespace, "greenflow-nats-ca", map[string][]byte{"ca.crt": c.CACert}),
		secret(Namespace, "greenflow-nats-tls", map[string][]byte{"tls.crt": c.NATSCert, "tls.key": c.NATSKey, "ca.crt": c.CACert}),
		secret(Namespace, "greenflow-nats-authorization", map[string][]byte{"authorization.conf": []byte(c.NATSConfig)}),
		secret(Namespace, "greenflow-clickhouse-users", map[string][]byte{"users.xml": []byte(c.UsersXML)}),
		// The reader's DSN for the CLI, its password alone for Grafana
		// (deploy/components/grafana reads the key password).
		secret(Namespace, "greenflow-clickhouse-reader", map[string][]byte{"clickhouse.dsn": dsn(chserver.UserReader),
			"password": []byte(c.ClickHousePasswords[chserver.UserReader])}),
	)
	if seed[bus.UserAdmin] == nil {
		return nil, fmt.Errorf("no NATS admin user in the contract (pkg/bus)")
	}
	// The declarer's (deploy/components/nats/topology.yaml): only admin
	// declares streams and buckets.
	out = append(out, secret(Namespace, "greenflow-nats-admin", map[string][]byte{"nats.nk": seed[bus.UserAdmin]}))
	return out, nil
}
