package bus

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// IsRevisionConflict reports whether a revision-checked KV write lost to
// another writer: an Update or a Delete with LastRevision found another
// revision, or a Create found the key there. The caller reads again and
// retries, or gives way. nats.go reports this in several forms — its
// ErrKeyRevisionMismatch and ErrKeyExists, or the stream's bare "wrong last
// sequence" API error (code 10071, or 10164 on a replicated stream, the
// form a Delete with LastRevision returns) — and each must count.
func IsRevisionConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
