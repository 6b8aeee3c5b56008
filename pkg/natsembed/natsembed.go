// Package natsembed runs an embedded NATS server with JetStream (the
// nats-server/v2 library) on 127.0.0.1, for `greenflow dev` and tests.
package natsembed

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server.
type Options struct {
	Port     int    // -1 picks a free port
	StoreDir string // JetStream file store; required
}

// Start runs the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats: store dir is required")
	}
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      o.Port,
		JetStream: true,
		StoreDir:  o.StoreDir,
		NoSigs:    true,
		NoLog:     true,
		// Lifecycle messages are small; 8 MiB bounds a spec upload.
		MaxPayload: 8 << 20,
	})
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
