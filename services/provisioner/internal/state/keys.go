package state

import (
	"encoding/hex"
	"strings"
)

// Key prefixes; every key is <prefix><token>.
const (
	PrefixLocal = "local."
	PrefixKube  = "kube."
	PrefixFinal = "final."
	// KeyPlatform holds this installation's id (see Store.Platform).
	KeyPlatform = "meta.platform"
)

// Token escapes an id for one token of a key: letters, digits, '-' and '_'
// stay; every other byte becomes =HH.
func Token(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteString(hex.EncodeToString([]byte{c}))
	}
	if b.Len() == 0 {
		return "="
	}
	return b.String()
}

// LocalKey is the record of a local run. The node that runs it is a field,
// not part of the key: a run has one record whichever node picks up its
// provision, so creating the record locks the run across nodes too.
func LocalKey(runID string) string { return PrefixLocal + Token(runID) }

// KubeKey is the record of a kubernetes run.
func KubeKey(runID string) string { return PrefixKube + Token(runID) }

// FinalKey marks a run the scheduler has ended.
func FinalKey(runID string) string { return PrefixFinal + Token(runID) }
