package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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
	// APITLS are the HTTPS certificates of APIServers (Dir/tls), by service.
	APITLS map[string]KeyPair
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
	t, err := ensureTLS(filepath.Join(dir, "tls"))
	if err != nil {
		return nil, err
	}
	c.CACert, c.NATSCert, c.NATSKey, c.APITLS = t.caCert, t.nats.Cert, t.nats.Key, t.apis
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

// ClickHouseAddr is the ClickHouse Service the components deploy.
const ClickHouseAddr = "clickhouse." + Namespace + ".svc:9000"

// Secrets are the Secrets the manifests mount (README, Security), made
// from c: one per service (its NATS seed and ClickHouse DSN; the
// scheduler's also the admin token it adopts; the console's the reader's
// DSN, not the writer's, and its session key), the CA in both namespaces,
// NATS's certificate and authorization block, ClickHouse's users.xml and
// the reader's DSN (for dashboards and the CLI), and the HTTPS
// certificates of APIServers.
func (c *Credentials) Secrets() ([]*corev1.Secret, error) {
	seed := map[string][]byte{}
	for _, u := range c.NATSUsers {
		b, err := os.ReadFile(u.SeedFile)
		if err != nil {
			return nil, fmt.Errorf("read the NATS seed of %s: %w", u.Name, err)
		}
		seed[u.Name] = b
	}
	// The users' public keys, beside each seed (bus.TrustFileName): what
	// every service checks signatures against.
	trust, err := os.ReadFile(filepath.Join(c.Dir, "nats", bus.TrustFileName))
	if err != nil {
		return nil, fmt.Errorf("read the NATS trust file: %w", err)
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
		data := map[string][]byte{"nats.nk": seed[svc], bus.TrustFileName: trust, "clickhouse.dsn": dsn(chserver.UserWriter)}
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
	// Each API server's HTTPS certificate, a Secret of its own (mounted
	// at /etc/greenflow/tls; the CA that signed it is greenflow-nats-ca's).
	for _, svc := range APIServers {
		kp, ok := c.APITLS[svc]
		if !ok {
			return nil, fmt.Errorf("no HTTPS certificate for %s in %s", svc, c.Dir)
		}
		s := secret(Namespace, "greenflow-"+svc+"-tls", map[string][]byte{corev1.TLSCertKey: kp.Cert, corev1.TLSPrivateKeyKey: kp.Key})
		s.Type = corev1.SecretTypeTLS
		out = append(out, s)
	}
	if seed[bus.UserAdmin] == nil {
		return nil, fmt.Errorf("no NATS admin user in the contract (pkg/bus)")
	}
	// The declarer's (deploy/components/nats/topology.yaml): only admin
	// declares streams and buckets.
	out = append(out, secret(Namespace, "greenflow-nats-admin", map[string][]byte{"nats.nk": seed[bus.UserAdmin], bus.TrustFileName: trust}))
	return out, nil
}
