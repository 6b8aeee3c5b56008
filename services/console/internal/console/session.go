package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Cookie names: the session, and the sign-in form's CSRF pair (before a
// session exists, its form is bound to this cookie instead).
const (
	sessionCookie = "gf_session"
	signinCookie  = "gf_signin"
)

// session is what the sealed cookie holds. The token is the user's API
// token: the console forwards it to the scheduler, so the user's role is
// what any action is allowed.
type session struct {
	Token     string `json:"t"`
	CSRF      string `json:"c"`
	ExpiresMs int64  `json:"e"`
}

// sealer seals sessions with AES-256-GCM: a cookie that was altered, or
// sealed under another key, does not open.
type sealer struct{ aead cipher.AEAD }

// newSealer uses the first 32 bytes of key.
func newSealer(key []byte) (*sealer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("session key of %d bytes: expected at least 32", len(key))
	}
	block, err := aes.NewCipher(key[:32])
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// sessionKey reads the key file, or makes a random key when there is none.
func sessionKey(path string) ([]byte, error) {
	if path == "" {
		return randomBytes(32), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the session key: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < 32 {
		return nil, fmt.Errorf("session key file %s: %d bytes, expected at least 32", path, len(b))
	}
	return b, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

func randomString() string { return base64.RawURLEncoding.EncodeToString(randomBytes(24)) }

func (s *sealer) seal(v session) string {
	plain, _ := json.Marshal(v)
	nonce := randomBytes(s.aead.NonceSize())
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(sessionCookie)))
}

var errBadSession = errors.New("no valid session")

func (s *sealer) open(text string, now time.Time) (session, error) {
	b, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(b) < s.aead.NonceSize() {
		return session{}, errBadSession
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(sessionCookie))
	if err != nil {
		return session{}, errBadSession
	}
	var v session
	if err := json.Unmarshal(plain, &v); err != nil || v.Token == "" || now.UnixMilli() >= v.ExpiresMs {
		return session{}, errBadSession
	}
	return v, nil
}

// cookie builds one of the console's cookies: never readable by scripts,
// never sent with a request another site starts, Secure under TLS.
func (c *Console) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: c.secure}
}

// sameToken compares CSRF tokens in constant time.
func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
