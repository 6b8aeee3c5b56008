package cluster

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KeyPair is a server certificate (PEM) and its private key (PEM).
type KeyPair struct{ Cert, Key []byte }

// APIServers are the services whose HTTP servers carry bearer tokens —
// the scheduler's and the analyzer's APIs, the console's sign-in and
// session cookies — and so serve HTTPS in the cluster, each with a
// certificate of its own (the Secret greenflow-<service>-tls).
var APIServers = []string{"scheduler", "analyzer", "console"}

// CAFile is where the cluster's CA certificate is kept in the secrets
// directory: clients of the NATS servers and of the HTTPS APIs trust it
// (the CLI's --api-ca-file).
func CAFile(dir string) string { return filepath.Join(dir, "tls", "ca.crt") }

// natsNames are the names the NATS servers answer to: the client Service
// and each server's address on the headless Service (cluster routes).
var natsNames = []string{
	"nats", "nats." + Namespace, "nats." + Namespace + ".svc", "nats." + Namespace + ".svc.cluster.local",
	"*.nats-headless." + Namespace + ".svc", "*.nats-headless." + Namespace + ".svc.cluster.local",
}

// ServiceNames are the names an API server's certificate is valid for:
// its Service's in-cluster names, and the loopback addresses `kubectl
// port-forward` gives it on the operator's machine (the CLI and a
// browser verify https://127.0.0.1:9464 against the same CA). Loopback
// names are safe to certify: only a client that trusts this cluster's CA
// believes them, and it reaches its own machine with them.
func ServiceNames(svc string) (dns []string, ips []net.IP) {
	return []string{svc, svc + "." + Namespace, svc + "." + Namespace + ".svc", svc + "." + Namespace + ".svc.cluster.local", "localhost"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
}

// renewBefore: a kept certificate closer than this to its end is issued
// anew, so `greenflow cluster up` renews what is about to expire.
const renewBefore = 30 * 24 * time.Hour

// tlsFiles are what ensureTLS makes: the CA, the NATS servers' and each
// API server's key pair.
type tlsFiles struct {
	caCert []byte
	nats   KeyPair
	apis   map[string]KeyPair
}

// ensureTLS makes a CA (ECDSA P-256, 10 years) once, and keeps a
// certificate it signed (2 years) for the NATS servers and for each of
// APIServers. A certificate is issued anew when it is missing, is not
// signed by the CA, lacks one of the names it must answer to (a newer
// GreenFlow may add names) or expires within renewBefore; otherwise it is
// kept, so nothing rotates by accident.
func ensureTLS(dir string) (*tlsFiles, error) {
	ca, caKey, caPEM, err := ensureCA(dir)
	if err != nil {
		return nil, err
	}
	out := &tlsFiles{caCert: caPEM, apis: map[string]KeyPair{}}
	if out.nats, err = ensureServerCert(dir, "nats", "nats."+Namespace+".svc", ca, caKey, natsNames, nil); err != nil {
		return nil, err
	}
	for _, svc := range APIServers {
		dns, ips := ServiceNames(svc)
		if out.apis[svc], err = ensureServerCert(dir, svc, svc+"."+Namespace+".svc", ca, caKey, dns, ips); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ensureCA reads the CA (dir/ca.crt, its key dir/ca.key, which stays with
// the operator to sign renewed certificates) or makes one.
func ensureCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, key, err := parsePair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("the cluster's CA in %s: %w", dir, err)
		}
		return ca, key, certPEM, nil
	case certErr == nil && errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("the cluster's CA %s has no key %s: restore it, or move %s away to make a new CA (every client must then trust the new ca.crt)",
			certPath, keyPath, dir)
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("read the cluster's CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("read the cluster's CA key: %w", keyErr)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make the cluster's CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "GreenFlow cluster CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make the cluster's CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM, keyPEM, err = encodePair(der, key)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := writeNew(keyPath, keyPEM); err != nil {
		return nil, nil, nil, err
	}
	return ca, key, certPEM, writeNew(certPath, certPEM)
}

// ensureServerCert keeps dir/<name>.crt and .key when the certificate is
// still good (see ensureTLS), else issues a new one for dns and ips.
func ensureServerCert(dir, name, commonName string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dns []string, ips []net.IP) (KeyPair, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	if certErr == nil && keyErr == nil && stillGood(certPEM, keyPEM, ca, dns, ips) {
		return KeyPair{Cert: certPEM, Key: keyPEM}, nil
	}
	for _, err := range []error{certErr, keyErr} {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return KeyPair{}, fmt.Errorf("read the %s certificate: %w", name, err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("make the %s certificate's key: %w", name, err)
	}
	now := time.Now()
	// Server and client auth: the NATS servers present theirs to each
	// other on their cluster routes.
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: commonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0), DNSNames: dns, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("issue the %s certificate: %w", name, err)
	}
	if certPEM, keyPEM, err = encodePair(der, key); err != nil {
		return KeyPair{}, err
	}
	if err := writeNew(keyPath, keyPEM); err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Cert: certPEM, Key: keyPEM}, writeNew(certPath, certPEM)
}

// stillGood: the pair matches, the CA signed the certificate, it answers
// to every one of dns and ips, and it is not about to expire.
func stillGood(certPEM, keyPEM []byte, ca *x509.Certificate, dns []string, ips []net.IP) bool {
	cert, _, err := parsePair(certPEM, keyPEM)
	if err != nil || time.Until(cert.NotAfter) < renewBefore {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	names := append([]string(nil), dns...)
	for _, ip := range ips {
		names = append(names, ip.String())
	}
	for _, n := range names {
		if n[0] == '*' {
			n = "x" + n[1:] // a wildcard name: verify a name it covers
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: n, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return false
		}
	}
	return true
}

// parsePair parses a PEM certificate and its PEM EC key, and checks that
// they belong together.
func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("not a PEM certificate and key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse the certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse the key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil || !bytes.Equal(pub, cert.RawSubjectPublicKeyInfo) {
		return nil, nil, errors.New("the key is not the certificate's")
	}
	return cert, key, nil
}

func encodePair(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}
