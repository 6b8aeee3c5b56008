package service

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"
)

// HTTPClientTrusting is a client of GreenFlow's HTTPS APIs that trusts the
// CA certificates in caFile (PEM) — a cluster's own CA, which signed its
// services' certificates — instead of the system's; an empty caFile
// trusts the system's CAs. timeout bounds each request (0: none). The CLI
// (--api-ca-file) and the console (calling the scheduler and analyzer)
// both use it, so both check a server the same way.
func HTTPClientTrusting(caFile string, timeout time.Duration) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{Timeout: timeout}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the CA file %s: no PEM certificate in it, expected one or more -----BEGIN CERTIFICATE----- blocks", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}
