package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// SealUnsigned seals, as admin, every record that a version of GreenFlow
// from before signatures wrote (sign.go): the newest value of each key in
// every bucket, when it carries no seal. Afterwards readers check records
// as usual; without it they would skip every one of them (an upgraded
// stack would forget its experiments and tokens).
//
// It vouches for whatever is there, so it is run once, by the operator,
// at the upgrade — never at every start, or a forger's unsigned record
// written since would be sealed too: the dev stack does it once per state
// dir, `greenflow nats declare --seal-unsigned` on request. It returns how
// many records it sealed, by bucket.
func SealUnsigned(ctx context.Context, b *Bus) (map[string]int, error) {
	if b.sig == nil || b.sig.user != UserAdmin {
		return nil, fmt.Errorf("seal unsigned records: only %s may vouch for them, on an authenticated connection", UserAdmin)
	}
	sealed := map[string]int{}
	var errs []error
	for _, name := range Buckets() {
		n, err := sealBucket(ctx, b, name)
		if n > 0 {
			sealed[name] = n
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("seal unsigned records of kv bucket %s: %w", name, err))
		}
	}
	return sealed, errors.Join(errs...)
}

func sealBucket(ctx context.Context, b *Bus, name string) (int, error) {
	kv, err := b.KV(ctx, name)
	if err != nil {
		return 0, err
	}
	st, err := b.js.Stream(ctx, "KV_"+name)
	if err != nil {
		return 0, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for key := range keys.Keys() {
		last, err := st.GetLastMsgForSubject(ctx, "$KV."+name+"."+key)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		if rawOp(last.Header) != kvOpPut {
			continue // a delete: nothing to keep
		}
		if _, _, isSealed := splitSeal(last.Data); isSealed {
			continue
		}
		// At the revision read: a record written meanwhile is left alone.
		if _, err := kv.Update(ctx, key, last.Data, last.Sequence); err != nil {
			return n, fmt.Errorf("key %s: %w", key, err)
		}
		n++
	}
	return n, nil
}
