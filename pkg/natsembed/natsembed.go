// Package natsembed runs an embedded NATS server with JetStream (the
// nats-server/v2 library) on 127.0.0.1, for `greenflow dev` and tests,
// with nkey users whose permissions pkg/bus derives from the event
// contract (see auth.go).
package natsembed

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server.
type Options struct {
	Port     int    // -1 picks a free port
	StoreDir string // JetStream file store; required
	// Users, when set, are the only connections accepted (Credentials).
	Users []User
	// TLS, when set, makes every client connection use TLS.
	TLS *tls.Config
}

// Start runs the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats: store dir is required")
	}
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      o.Port,
		JetStream: true,
		StoreDir:  o.StoreDir,
		NoSigs:    true,
		NoLog:     true,
		// Lifecycle messages are small; 8 MiB bounds a spec upload.
		MaxPayload: 8 << 20,
	}
	for _, u := range o.Users {
		opts.Nkeys = append(opts.Nkeys, u.serverUser())
	}
	if o.TLS != nil {
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, o.TLS, 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats not ready within 10s")
	}
	return ns, nil
}
