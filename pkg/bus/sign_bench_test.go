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
