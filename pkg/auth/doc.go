// Package auth guards the platform's HTTP APIs (the scheduler's
// experiments, the analyzer's results, the token management API) with
// bearer tokens that carry a role:
//
//	viewer    reads (GET): experiments, status, results
//	operator  viewer, plus submit and cancel
//	admin     operator, plus creating, listing and revoking tokens
//
// A token is `gft_<id>_<secret>`: the id names its record, the secret is 32
// bytes from crypto/rand. Only the SHA-256 of the whole token is stored —
// in the JetStream KV bucket TokenBucket, which every service with an API
// already reaches through the bus, so a token created or revoked through
// one service counts in every other at its next request (each request reads
// the record; nothing is cached). SHA-256 without salt or stretching is
// right here because the secret is 256 random bits, not a password: there is
// no dictionary to try and no way to brute-force it, and a stolen bucket
// gives no usable token. The presented token's hash is compared with the
// stored one in constant time (crypto/subtle).
//
// Guard wraps each API route with its least role, and also refuses request
// bodies that are not application/json or application/yaml (415: a web page
// can post text/plain or a form across origins without a preflight, so
// accepting those would let any page a user visits submit a spec), bodies
// over a limit (413) and clients over a request rate (429 with
// Retry-After). It sets no CORS header: a cross-origin preflight gets no
// Access-Control-Allow-Origin and the browser stops there.
package auth
