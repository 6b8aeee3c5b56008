package bus

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/greenflow/greenflow/pkg/events"
)

// Signature headers of a lifecycle message (trust.go says why).
const (
	HeaderSigner    = "Gf-Signer"    // the producer's nkey public key
	HeaderSignature = "Gf-Signature" // base64url of its signature (eventContent)
)

// ErrUnverified is the error of a message or record whose signature does
// not prove that a user the contract allows produced it.
var ErrUnverified = errors.New("not signed by a producer the contract allows")

// signer signs what this bus produces and checks what it reads. A bus on
// an unauthenticated connection (tests, a NATS without users) has none:
// it neither signs nor checks.
type signer struct {
	user  string // this bus's user, as the trust file names it
	pub   string
	sign  func([]byte) ([]byte, error)
	trust *Trust
}

// newSigner is the signer of a connection that authenticates with an nkey:
// the key nats.go signs the server's nonce with, and the trust its
// Credentials loaded. nil without an nkey.
func newSigner(nc *nats.Conn) (*signer, error) {
	pub := nc.Opts.Nkey
	if pub == "" || nc.Opts.SignatureCB == nil {
		return nil, nil
	}
	t := trustFor(pub)
	if t == nil {
		return nil, fmt.Errorf("nats user %s: no trust file was read with its seed (--nats-trust-file, or %s beside the seed): every message is checked against its producers' keys", pub, TrustFileName)
	}
	user, ok := t.User(pub)
	if !ok {
		return nil, fmt.Errorf("nats user %s: the trust file read with its seed does not list this key: is it the trust file of this deployment (nats-trust.json beside the seeds that made it)?", pub)
	}
	return &signer{user: user, pub: pub, sign: func(b []byte) ([]byte, error) { return nc.Opts.SignatureCB(b) }, trust: t}, nil
}

// fields joins length-prefixed fields, so no value (a run id with a
// newline) can shift its bytes into the next field.
func fields(parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.Write(p)
	}
	return b.Bytes()
}

// eventContent is what a lifecycle message's signature covers: its subject
// (so a message moved onto another subject fails), the standard headers and
// the body.
func eventContent(subject string, h nats.Header, data []byte) []byte {
	return fields([]byte("gf-evt-v1"), []byte(subject), []byte(h.Get(HeaderType)), []byte(h.Get(HeaderVersion)),
		[]byte(h.Get(nats.MsgIdHdr)), []byte(h.Get(HeaderExperiment)), []byte(h.Get(HeaderRun)),
		[]byte(h.Get(HeaderProducer)), data)
}

// signEvent adds the signature headers to msg.
func (s *signer) signEvent(msg *nats.Msg) error {
	if s == nil {
		return nil
	}
	sig, err := s.sign(eventContent(msg.Subject, msg.Header, msg.Data))
	if err != nil {
		return fmt.Errorf("sign %s: %w", msg.Header.Get(HeaderType), err)
	}
	msg.Header.Set(HeaderSigner, s.pub)
	msg.Header.Set(HeaderSignature, base64.RawURLEncoding.EncodeToString(sig))
	return nil
}

// verifyEvent checks that a lifecycle message was signed by a producer of
// its type.
func (s *signer) verifyEvent(subject string, h nats.Header, data []byte) error {
	if s == nil {
		return nil
	}
	typ := events.Type(h.Get(HeaderType))
	user, err := s.check(h.Get(HeaderSigner), h.Get(HeaderSignature), eventContent(subject, h, data))
	if err != nil {
		return fmt.Errorf("%s on %s: %w", typ, subject, err)
	}
	if user == UserAdmin {
		return nil
	}
	e, ok := events.Lookup(typ)
	if !ok || !slices.Contains(e.Producers, events.Service(user)) {
		return fmt.Errorf("%s on %s: signed by %s, which does not produce it (producers: %v): %w", typ, subject, user, e.Producers, ErrUnverified)
	}
	return nil
}

// check verifies sig (base64url) over content with the key pub, which the
// trust file must know; it returns pub's user.
func (s *signer) check(pub, sig string, content []byte) (string, error) {
	if pub == "" || sig == "" {
		return "", fmt.Errorf("unsigned: %w", ErrUnverified)
	}
	user, ok := s.trust.User(pub)
	if !ok {
		return "", fmt.Errorf("signed by %s, a key the trust file does not know: %w", pub, ErrUnverified)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return "", fmt.Errorf("signature is not base64url: %w", ErrUnverified)
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("signer key %s: %v: %w", pub, err, ErrUnverified)
	}
	if err := kp.Verify(content, raw); err != nil {
		return "", fmt.Errorf("signature by %s does not match (altered, or moved from another subject or key): %w", user, ErrUnverified)
	}
	return user, nil
}

// A key-value record is sealed: its value starts with a line
// "GFS1 <public key> <signature>" and the signature covers the bucket, the
// key, the operation and the value — so a record copied into another
// bucket or key, or a put replayed as a delete, fails.
var sealMagic = []byte("GFS1 ")

func recordContent(bucket, key, op string, data []byte) []byte {
	return fields([]byte("gf-kv-v1"), []byte(bucket), []byte(key), []byte(op), data)
}

// seal prefixes data with this user's signature line.
func (s *signer) seal(bucket, key, op string, data []byte) ([]byte, error) {
	if s == nil {
		return data, nil
	}
	sig, err := s.sign(recordContent(bucket, key, op, data))
	if err != nil {
		return nil, fmt.Errorf("sign kv record %s/%s: %w", bucket, key, err)
	}
	out := make([]byte, 0, len(sealMagic)+len(s.pub)+100+len(data))
	out = append(out, sealMagic...)
	out = append(out, s.pub...)
	out = append(out, ' ')
	out = append(out, base64.RawURLEncoding.EncodeToString(sig)...)
	out = append(out, '\n')
	return append(out, data...), nil
}

// unseal checks a record's seal against the users that write bucket and
// returns its value. Without a signer it only strips a seal.
func (s *signer) unseal(bucket, key, op string, value []byte) ([]byte, error) {
	line, data, sealed := splitSeal(value)
	if s == nil {
		return data, nil
	}
	if !sealed {
		return nil, fmt.Errorf("kv record %s/%s: unsigned: %w", bucket, key, ErrUnverified)
	}
	parts := bytes.Fields(line)
	if len(parts) != 2 {
		return nil, fmt.Errorf("kv record %s/%s: malformed seal: %w", bucket, key, ErrUnverified)
	}
	user, err := s.check(string(parts[0]), string(parts[1]), recordContent(bucket, key, op, data))
	if err != nil {
		return nil, fmt.Errorf("kv record %s/%s: %w", bucket, key, err)
	}
	if w := BucketWriters(bucket); !slices.Contains(w, user) {
		return nil, fmt.Errorf("kv record %s/%s: signed by %s, which does not write this bucket (writers: %v): %w", bucket, key, user, w, ErrUnverified)
	}
	return data, nil
}

// splitSeal splits a sealed value into its seal line (without the magic)
// and the value; an unsealed value is all value.
func splitSeal(value []byte) (line, data []byte, sealed bool) {
	if !bytes.HasPrefix(value, sealMagic) {
		return nil, value, false
	}
	rest := value[len(sealMagic):]
	i := bytes.IndexByte(rest, '\n')
	if i < 0 {
		return nil, value, false
	}
	return rest[:i], rest[i+1:], true
}

// BucketWriters are the users whose records bucket b holds: the services
// that own it (userResources) and admin.
func BucketWriters(b string) []string {
	if w, ok := bucketWriters()[b]; ok {
		return w
	}
	return []string{UserAdmin} // a bucket no service owns (a test's)
}

// bucketWriters is every bucket's writers, from userResources, computed
// once: a signing bus asks at every record it reads.
var bucketWriters = sync.OnceValue(func() map[string][]string {
	out := map[string][]string{}
	for user, res := range userResources {
		for _, b := range res.buckets {
			out[b] = append(out[b], user)
		}
	}
	for b := range out {
		out[b] = append(out[b], UserAdmin)
		slices.Sort(out[b])
	}
	return out
})
