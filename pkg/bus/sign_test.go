package bus

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/greenflow/greenflow/pkg/events"
)

// benchSigner is an analyzer's signer and the trust that knows it.
func benchSigner(b *testing.B) *signer {
	kp, err := nkeys.CreateUser()
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	trust, err := NewTrust(map[string][]string{string(events.ServiceAnalyzer): {pub}})
	if err != nil {
		b.Fatal(err)
	}
	return &signer{user: string(events.ServiceAnalyzer), pub: pub, sign: kp.Sign, trust: trust}
}

// What signing adds to publishing and consuming one lifecycle message of
// a typical size (a run.analyzed is ~400 bytes of JSON).
func BenchmarkSignAndVerifyEvent(b *testing.B) {
	s := benchSigner(b)
	msg := nats.NewMsg(Subject(events.TypeRunAnalyzed))
	msg.Data = make([]byte, 400)
	msg.Header.Set(HeaderType, string(events.TypeRunAnalyzed))
	msg.Header.Set(HeaderVersion, "2")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.signEvent(msg); err != nil {
			b.Fatal(err)
		}
		if err := s.verifyEvent(msg.Subject, msg.Header, msg.Data); err != nil {
			b.Fatal(err)
		}
	}
}

// A put's stored message carries no KV-Operation header: its seal is
// checked as a put's (a Get racing with a create read it as forged).
func TestAPutWithoutOperationHeaderHolds(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	trust, err := NewTrust(map[string][]string{string(events.ServiceScheduler): {pub}})
	if err != nil {
		t.Fatal(err)
	}
	s := &signer{user: string(events.ServiceScheduler), pub: pub, sign: kp.Sign, trust: trust}
	sealed, err := s.seal(BucketScheduler, "exp-1", kvOpPut, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.unseal(BucketScheduler, "exp-1", rawOp(nats.Header{}), sealed); err != nil {
		t.Fatalf("a put read back without its operation header: %v", err)
	}
	if _, err := s.unseal(BucketScheduler, "exp-1", rawOp(nats.Header{kvOpHeader: []string{kvOpDel}}), sealed); err == nil {
		t.Fatal("a put's seal held as a delete's")
	}
}
