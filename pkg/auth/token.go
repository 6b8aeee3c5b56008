package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Role is what a token may do; a higher role may do everything a lower one
// may.
type Role string

// Roles, least first.
const (
	Viewer   Role = "viewer"
	Operator Role = "operator"
	Admin    Role = "admin"
)

var rank = map[Role]int{Viewer: 1, Operator: 2, Admin: 3}

// Roles lists every role, least first.
var Roles = []Role{Viewer, Operator, Admin}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if _, ok := rank[r]; !ok {
		return "", fmt.Errorf("role %q: expected viewer, operator or admin", s)
	}
	return r, nil
}

// Allows reports whether a token of role r may do what needs role need.
func (r Role) Allows(need Role) bool { return rank[r] > 0 && rank[r] >= rank[need] }

// Prefix starts every token, so one found in a file, a paste or a leak
// scanner's input is recognised as a GreenFlow API token.
const Prefix = "gft_"

const (
	idBytes     = 6  // 12 hex digits: names the record, not secret
	secretBytes = 32 // 256 bits from crypto/rand
)

// Token is a token's stored record. It never holds the token itself, only
// its SHA-256.
type Token struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Role      Role   `json:"role"`
	Hash      string `json:"sha256"`
	CreatedMs int64  `json:"created_ms"`
	// ExpiresMs is when the token stops working; 0: never.
	ExpiresMs int64 `json:"expires_ms,omitempty"`
	RevokedMs int64 `json:"revoked_ms,omitempty"`
}

// Revoked reports whether the token was revoked.
func (t Token) Revoked() bool { return t.RevokedMs != 0 }

// Expired reports whether the token has expired at now.
func (t Token) Expired(now time.Time) bool { return t.ExpiresMs != 0 && now.UnixMilli() >= t.ExpiresMs }

// newToken draws a token and returns it with its record (hash filled).
func newToken(name string, role Role, now time.Time, ttl time.Duration) (string, Token, error) {
	b := make([]byte, idBytes+secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", Token{}, fmt.Errorf("draw a token: %w", err)
	}
	id := hex.EncodeToString(b[:idBytes])
	plain := Prefix + id + "_" + hex.EncodeToString(b[idBytes:])
	t := Token{ID: id, Name: name, Role: role, Hash: hashOf(plain), CreatedMs: now.UnixMilli()}
	if ttl > 0 {
		t.ExpiresMs = now.Add(ttl).UnixMilli()
	}
	return plain, t, nil
}

// Draw makes a token without storing it, for a record made later with
// Store.Adopt (a Secret written before the cluster's NATS exists).
func Draw() (string, error) {
	plain, _, err := newToken("draw", Viewer, time.Time{}, 0)
	return plain, err
}

func hashOf(plain string) string {
	h := sha256.Sum256([]byte(plain))
	return hex.EncodeToString(h[:])
}

var tokenRE = regexp.MustCompile(`^` + Prefix + `([0-9a-f]{12})_[0-9a-f]{64}$`)

// errMalformed is a presented string that is not a token at all.
var errMalformed = errors.New("not a GreenFlow token (expected gft_<id>_<secret>)")

// idOf returns the record id a presented token names.
func idOf(plain string) (string, error) {
	m := tokenRE.FindStringSubmatch(plain)
	if m == nil {
		return "", errMalformed
	}
	return m[1], nil
}

// matches reports, in constant time, whether plain is the token t was
// made from.
func (t Token) matches(plain string) bool {
	want, err := hex.DecodeString(t.Hash)
	if err != nil {
		return false
	}
	got := sha256.Sum256([]byte(plain))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidName checks a token's name: it is shown in lists and logs and used
// to revoke it.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("token name %q: expected 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	if idRE.MatchString(name) {
		// revoke takes a name or an id: a name shaped like an id could
		// shadow another token's id (revoking the other token instead).
		return fmt.Errorf("token name %q: looks like a token id (12 hex digits); choose a name with another letter", name)
	}
	return nil
}

var idRE = regexp.MustCompile(`^[0-9a-f]{12}$`)
