package bus

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
)

// Credentials say how a connection proves who it is and whether it is
// encrypted. Every secret is a file path, never a value, so no command
// line, environment dump or log carries one.
//
// Users are nkeys: the client holds a seed (a file, from the dev stack's
// state dir or a Kubernetes Secret) and signs the server's nonce with it;
// the server knows only the public key. So the server's configuration —
// and `greenflow nats-config`'s output — holds no secret, and a seed never
// crosses the network (a password would, on every connect, in the clear
// without TLS).
type Credentials struct {
	NKeyFile string `flag:"nats-nkey-file" help:"file holding this service's NATS nkey seed (SU…); empty connects without authenticating"`
	// TrustFile lists every user's public key: what this service signs is
	// checked by the others against it, and what it reads it checks
	// (trust.go). Default: nats-trust.json beside the seed.
	TrustFile string `flag:"nats-trust-file" help:"file listing the NATS users' public keys, to check who signed each message and record (default: nats-trust.json beside --nats-nkey-file)"`
	CAFile    string `flag:"nats-ca-file" help:"PEM file of the CA that signed the NATS server's certificate; set to require TLS"`
	CertFile  string `flag:"nats-cert-file" help:"PEM client certificate for NATS servers that verify clients (with --nats-key-file)"`
	KeyFile   string `flag:"nats-key-file" help:"PEM private key of --nats-cert-file"`
}

// Validate checks that a client certificate comes with its key.
func (c Credentials) Validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("nats client certificate %q and key %q: expected both or neither", c.CertFile, c.KeyFile)
	}
	return nil
}

// Options are the nats.go options for c: the nkey (with the user's own
// inbox prefix, which its permissions allow) and TLS.
func (c Credentials) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	if c.NKeyFile != "" {
		kp, err := ReadSeed(c.NKeyFile)
		if err != nil {
			return nil, err
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: public key: %w", c.NKeyFile, err)
		}
		trustFile := c.TrustFile
		if trustFile == "" {
			trustFile = DefaultTrustFile(c.NKeyFile)
		}
		t, err := LoadTrust(trustFile)
		if err != nil {
			return nil, err
		}
		registerTrust(pub, t)
		// The key pair stays in memory for reconnects; it is not logged.
		opts = append(opts, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(InboxPrefix(pub)))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return opts, nil
}

// ReadSeed reads a user nkey seed file.
func ReadSeed(path string) (nkeys.KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nats nkey seed: %w", err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(data))))
	if err != nil {
		return nil, fmt.Errorf("nats nkey seed %s: expected a user seed (SU…): %w", path, err)
	}
	if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("nats nkey seed %s: expected a user seed (SU…), got another kind of key", path)
	}
	return kp, nil
}

// NewUserSeed writes a new user nkey seed to path (mode 0600) and returns
// its public key.
func NewUserSeed(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("create nats nkey: %w", err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("write nats nkey seed: %w", err)
	}
	return pub, os.Chmod(path, 0o600)
}

// asyncError logs and counts what the server reports outside a request: a
// permission violation above all, which would otherwise look like a hang
// (a publish never acknowledged, a consumer that never receives).
func (b *Bus) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	kind := "other"
	switch {
	case errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation"):
		kind = "permission"
		b.refused(err)
	case errors.Is(err, nats.ErrSlowConsumer):
		kind = "slow_consumer"
	case errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired):
		kind = "authorization"
	}
	b.m.asyncErrors.WithLabelValues(kind).Inc()
	fields := []zap.Field{zap.String("kind", kind), zap.Error(err)}
	if sub != nil {
		fields = append(fields, zap.String("subscription", sub.Subject))
	}
	b.logger.Error("nats reported an error", fields...)
}
