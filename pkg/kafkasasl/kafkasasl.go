// Package kafkasasl gives Kafka clients their SASL credentials: read from
// a file (--kafka-sasl-file, never a password on a command line or in an
// event) and turned into franz-go options. The dev stack's in-process
// Kafka requires them (SCRAM-SHA-256, generated into its state dir).
package kafkasasl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"gopkg.in/yaml.v3"
)

// Mechanisms a credentials file may name.
const (
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
	Plain       = "PLAIN" // the password crosses the network: only over TLS
)

// Credentials are one Kafka user's.
type Credentials struct {
	Mechanism string `yaml:"mechanism"`
	User      string `yaml:"user"`
	Password  string `yaml:"password"`
}

// Validate reports every missing or wrong field.
func (c Credentials) Validate() error {
	var errs []error
	switch c.Mechanism {
	case ScramSHA256, ScramSHA512, Plain:
	default:
		errs = append(errs, fmt.Errorf("mechanism: got %q, expected %s, %s or %s", c.Mechanism, ScramSHA256, ScramSHA512, Plain))
	}
	if c.User == "" {
		errs = append(errs, errors.New("user: empty, expected the Kafka user's name"))
	}
	if c.Password == "" {
		errs = append(errs, errors.New("password: empty"))
	}
	return errors.Join(errs...)
}

// Option is the franz-go option that authenticates as c.
func (c Credentials) Option() kgo.Opt {
	switch c.Mechanism {
	case ScramSHA512:
		return kgo.SASL(scram.Auth{User: c.User, Pass: c.Password}.AsSha512Mechanism())
	case Plain:
		return kgo.SASL(plain.Auth{User: c.User, Pass: c.Password}.AsMechanism())
	default:
		return kgo.SASL(scram.Auth{User: c.User, Pass: c.Password}.AsSha256Mechanism())
	}
}

// Generate makes SCRAM-SHA-256 credentials for user with a random
// password (32 bytes, hex).
func Generate(user string) (Credentials, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Credentials{}, fmt.Errorf("make kafka password: %w", err)
	}
	return Credentials{Mechanism: ScramSHA256, User: user, Password: hex.EncodeToString(b[:])}, nil
}

// Read reads the credentials in path (YAML: mechanism, user, password).
func Read(path string) (Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("read --kafka-sasl-file: %w", err)
	}
	var c Credentials
	if err := yaml.Unmarshal(data, &c); err != nil {
		return Credentials{}, fmt.Errorf("--kafka-sasl-file %s: expected YAML with mechanism, user and password: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Credentials{}, fmt.Errorf("--kafka-sasl-file %s: %w", path, err)
	}
	return c, nil
}

// Write writes c to path, readable by its owner only.
func Write(path string, c Credentials) error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode kafka credentials: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write kafka credentials %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// Flag is the --kafka-sasl-file flag of every service that talks to Kafka.
type Flag struct {
	File string `flag:"kafka-sasl-file" help:"YAML file with this service's Kafka SASL credentials (mechanism: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN; user; password); empty connects without authenticating"`
}

// Options are the client options of f's file: none when it is empty.
func (f Flag) Options() ([]kgo.Opt, error) {
	if strings.TrimSpace(f.File) == "" {
		return nil, nil
	}
	c, err := Read(f.File)
	if err != nil {
		return nil, err
	}
	return []kgo.Opt{c.Option()}, nil
}
