package bus

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/greenflow/greenflow/pkg/events"
)

// The read side of the dead-letter stream, for operators (`greenflow
// dead-letters`). It reads with the stream's direct get, in batches
// ($JS.API.DIRECT.GET.GF_DEADLETTER), and its message get, one at a time
// ($JS.API.STREAM.MSG.GET.GF_DEADLETTER): no consumer is created, so
// nothing is delivered, acknowledged or counted against anyone, and the
// permissions it needs read that one stream and can touch nothing else —
// "any consumer name" on it, which an ordered consumer would need, could
// also pull from a durable consumer there.

// HeaderDLQKind is the short kind of a dead letter's reason (the reason
// label of greenflow_bus_messages_dead_lettered_total: panic, unverified,
// undecodable, rejected, failed, out_of_deliveries). Dead letters written
// before it carry only the reason text, whose first words say the same
// (DeadLetterKind).
const HeaderDLQKind = "Gf-Dlq-Kind"

// The dead-lettering service's signature of a dead letter (deadLetterContent):
// its user's key and the signature. The original's own signature headers
// stay as they were, for Replay to check.
const (
	HeaderDLQSigner    = "Gf-Dlq-Signer"
	HeaderDLQSignature = "Gf-Dlq-Signature"
)

// HeaderDLQMsgID is the dead-lettered message's own Nats-Msg-Id: the
// copy has one of its own (dead-lettering twice stores it once), and the
// original's signature covers the original's.
const HeaderDLQMsgID = "Gf-Dlq-Msg-Id"

// DeadLetter is one message of the dead-letter stream, with what its
// headers and body say about it.
type DeadLetter struct {
	Seq  uint64    `json:"seq"` // in the dead-letter stream: DeadLetterAt's argument
	Time time.Time `json:"time"`
	// Subject is the subject it was consumed from; Consumer the durable
	// consumer that gave it up after Deliveries deliveries; StreamSeq its
	// sequence in the stream it was consumed from.
	Subject    string `json:"subject"`
	Consumer   string `json:"consumer"`
	Deliveries uint64 `json:"deliveries"`
	StreamSeq  uint64 `json:"stream_seq"`
	Kind       string `json:"kind"`
	Reason     string `json:"reason"`
	Type       string `json:"type,omitempty"`
	Version    int    `json:"version,omitempty"`
	// ExperimentID and RunID come from its headers, or from its body when
	// that decodes as the event its headers name.
	ExperimentID string `json:"experiment_id,omitempty"`
	RunID        string `json:"run_id,omitempty"`
	// SignedBy is the user whose signature of the dead letter holds: the
	// service that runs its consumer (or admin). Unverified says why not
	// (any service's seed may write a dead letter); both are empty when
	// the reader checks nothing (no trust file: a NATS without users).
	SignedBy   string      `json:"signed_by,omitempty"`
	Unverified string      `json:"unverified,omitempty"`
	Headers    nats.Header `json:"headers"`
	Data       []byte      `json:"-"`
}

// DeadLetterKind is the short kind of a dead-letter reason: its header
// when it has one, else read from the reason's first words (handle.go
// writes them).
func DeadLetterKind(h nats.Header) string {
	if k := h.Get(HeaderDLQKind); k != "" {
		return k
	}
	reason := h.Get(HeaderDLQReason)
	for _, k := range []struct{ prefix, kind string }{
		{"panic: ", dlqPanic}, {"unverified: ", dlqUnverified}, {"undecodable: ", dlqUndecodable},
		{"rejected: ", dlqRejected}, {reasonFailed + " ", dlqFailed}, {reasonOutOfDeliveries + ":", dlqOutOfDeliveries},
	} {
		if strings.HasPrefix(reason, k.prefix) {
			return k.kind
		}
	}
	return "unknown"
}

// ErrNoDeadLetter is the error of DeadLetterAt for a sequence the stream
// does not hold (never written, or aged out).
var ErrNoDeadLetter = errors.New("no such dead letter")

// deadLetterBatch is how many dead letters one direct get returns.
const deadLetterBatch = 1000

// DeadLetters calls fn with every dead letter stored at or after since
// (zero: all) up to the last stored when it starts, oldest first, until fn
// returns an error (returned). It consumes nothing.
func (b *Bus) DeadLetters(ctx context.Context, since time.Time, fn func(DeadLetter) error) error {
	st, err := b.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return fmt.Errorf("look up the dead-letter stream %s: %w", StreamDeadLetter, err)
	}
	info := st.CachedInfo()
	req := msgGetRequest{NextFor: SubjectDLQ + ">", Seq: 1}
	if !since.IsZero() {
		req.Seq, req.StartTime = 0, &since
	}
	if info.Config.AllowDirect {
		return b.deadLettersDirect(ctx, req, info.State.LastSeq, fn)
	}
	// A stream declared before dead letters were read in batches: one by
	// one (about 15,000 a second).
	for {
		d, err := b.getDeadLetter(ctx, req)
		if errors.Is(err, ErrNoDeadLetter) || (err == nil && d.Seq > info.State.LastSeq) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
		req = msgGetRequest{NextFor: SubjectDLQ + ">", Seq: d.Seq + 1}
	}
}

// Headers the server adds to a directly got message.
var directHeaders = []string{"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Num-Pending", "Nats-Last-Sequence"}

// deadLettersDirect reads the dead letters from req on up to last in
// batches of direct gets ($JS.API.DIRECT.GET.GF_DEADLETTER with a batch:
// the server sends the messages, then an end-of-batch status).
func (b *Bus) deadLettersDirect(ctx context.Context, req msgGetRequest, last uint64, fn func(DeadLetter) error) error {
	subject := "$JS.API.DIRECT.GET." + StreamDeadLetter
	for {
		body, err := json.Marshal(directGetRequest{msgGetRequest: req, Batch: deadLetterBatch})
		if err != nil {
			return err
		}
		next, done, err := b.directBatch(ctx, subject, body, last, fn)
		if err != nil || done {
			return err
		}
		req = msgGetRequest{NextFor: SubjectDLQ + ">", Seq: next}
	}
}

type directGetRequest struct {
	msgGetRequest
	Batch int `json:"batch"`
}

// directBatch sends one batch request and hands its messages to fn; it
// returns the sequence to ask from next, and done once past last or at
// the stream's end.
func (b *Bus) directBatch(ctx context.Context, subject string, body []byte, last uint64, fn func(DeadLetter) error) (uint64, bool, error) {
	rctx, done := b.readCall(ctx, subject)
	defer done()
	sub, err := b.nc.SubscribeSync(b.nc.NewInbox())
	if err != nil {
		return 0, false, fmt.Errorf("read the dead-letter stream %s: %w", StreamDeadLetter, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	if err := b.nc.PublishRequest(subject, sub.Subject, body); err != nil {
		return 0, false, fmt.Errorf("read the dead-letter stream %s: %w", StreamDeadLetter, err)
	}
	var next uint64
	for {
		msg, err := sub.NextMsgWithContext(rctx)
		if err != nil {
			return 0, false, readError(rctx, err)
		}
		switch status := msg.Header.Get("Status"); status {
		case "":
		case "204": // end of the batch
			return next, next == 0 || next > last, nil
		case "404": // nothing at or after the sequence asked
			return 0, true, nil
		default:
			return 0, false, fmt.Errorf("read the dead-letter stream %s: %s %s", StreamDeadLetter, status, msg.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(msg.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("read the dead-letter stream %s: a message without its sequence: %w", StreamDeadLetter, err)
		}
		if seq > last {
			continue // stored after the listing began; the batch ends soon
		}
		at, _ := time.Parse(time.RFC3339Nano, msg.Header.Get("Nats-Time-Stamp"))
		h := msg.Header
		for _, k := range directHeaders {
			h.Del(k)
		}
		if err := fn(b.newDeadLetter(seq, at, h, msg.Data)); err != nil {
			return 0, false, err
		}
		next = seq + 1
	}
}

// DeadLetterAt is the dead letter at sequence seq of the dead-letter
// stream; ErrNoDeadLetter when there is none.
func (b *Bus) DeadLetterAt(ctx context.Context, seq uint64) (DeadLetter, error) {
	if seq == 0 {
		return DeadLetter{}, fmt.Errorf("dead letter 0: %w (sequences start at 1)", ErrNoDeadLetter)
	}
	return b.getDeadLetter(ctx, msgGetRequest{Seq: seq})
}

// msgGetRequest is the JetStream API's message get: the message at Seq,
// or with NextFor the first on a matching subject at or after Seq (or
// StartTime).
type msgGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Header  []byte    `json:"hdrs"`
		Data    []byte    `json:"data"`
		Time    time.Time `json:"time"`
	} `json:"message"`
}

// readCall is ctx for one read on subject: ended at once when the server
// refuses it, and within 10 s when ctx has no deadline; done releases it.
func (b *Bus) readCall(ctx context.Context, subject string) (context.Context, func()) {
	rctx, done := b.refusable(ctx, subjectIs(subject))
	if _, ok := rctx.Deadline(); ok {
		return rctx, done
	}
	rctx, cancel := context.WithTimeout(rctx, 10*time.Second)
	return rctx, func() { cancel(); done() }
}

// readError is the error of a read that got no answer: a refusal says
// which user may read.
func readError(rctx context.Context, err error) error {
	if err := refusal(rctx, err); errors.Is(err, ErrRefused) {
		return fmt.Errorf("read the dead-letter stream %s: %w; reading it takes the greenflow command's NATS user (or admin): "+
			"give its seed with --nats-nkey-file", StreamDeadLetter, err)
	}
	return fmt.Errorf("read the dead-letter stream %s: %w", StreamDeadLetter, refusal(rctx, err))
}

// jsErrNoMessage is the JetStream API's error code for "no message found".
const jsErrNoMessage = 10037

func (b *Bus) getDeadLetter(ctx context.Context, req msgGetRequest) (DeadLetter, error) {
	subject := "$JS.API.STREAM.MSG.GET." + StreamDeadLetter
	body, err := json.Marshal(req)
	if err != nil {
		return DeadLetter{}, err
	}
	rctx, done := b.readCall(ctx, subject)
	defer done()
	msg, err := b.nc.RequestWithContext(rctx, subject, body)
	if err != nil {
		return DeadLetter{}, readError(rctx, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return DeadLetter{}, fmt.Errorf("read the dead-letter stream %s: answer is not JSON: %w", StreamDeadLetter, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == jsErrNoMessage:
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", req.Seq, ErrNoDeadLetter)
	case resp.Error != nil:
		return DeadLetter{}, fmt.Errorf("read the dead-letter stream %s: %s (code %d)", StreamDeadLetter, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return DeadLetter{}, fmt.Errorf("read the dead-letter stream %s: answer holds no message", StreamDeadLetter)
	}
	m := resp.Message
	h := nats.Header{}
	if len(m.Header) > 0 {
		if h, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return DeadLetter{}, fmt.Errorf("dead letter %d: headers: %w", m.Seq, err)
		}
	}
	return b.newDeadLetter(m.Seq, m.Time, h, m.Data), nil
}

// newDeadLetter reads what a dead letter's headers and body say, and
// checks who signed it.
func (b *Bus) newDeadLetter(seq uint64, at time.Time, h nats.Header, data []byte) DeadLetter {
	d := DeadLetter{Seq: seq, Time: at.UTC(), Subject: h.Get(HeaderDLQSubject), Consumer: h.Get(HeaderDLQConsume),
		Kind: DeadLetterKind(h), Reason: h.Get(HeaderDLQReason), Type: h.Get(HeaderType),
		ExperimentID: h.Get(HeaderExperiment), RunID: h.Get(HeaderRun), Headers: h, Data: data}
	d.Deliveries, _ = strconv.ParseUint(h.Get(HeaderDLQDeliver), 10, 64)
	d.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderDLQStream), 10, 64)
	d.Version, _ = strconv.Atoi(h.Get(HeaderVersion))
	if err := b.sig.verifyDeadLetter(h, data); err != nil {
		d.Unverified = err.Error()
	} else if b.sig != nil {
		d.SignedBy, _ = b.sig.trust.User(h.Get(HeaderDLQSigner))
	}
	if d.ExperimentID == "" && d.Type != "" {
		// A body that is the event its headers name says whose it is.
		if m, err := events.Decode(events.Type(d.Type), d.Version, data); err == nil {
			d.ExperimentID, d.RunID = m.IDs()
		}
	}
	return d
}

// ErrNotReplayable is the error of Replay for a dead letter that cannot be
// published again.
var ErrNotReplayable = errors.New("cannot be replayed")

// HeaderReplayOf names the dead letter (its sequence in GF_DEADLETTER) a
// replayed message was published from.
const HeaderReplayOf = "Gf-Replay-Of"

// Replay publishes dead letter d again, to the subject it was consumed
// from, with its headers (but the dead-letter ones) and body, under a new
// message id ("replay-<seq>-<original id>": the original's is still in the
// stream's de-duplication window for 10 minutes, and replaying the same
// dead letter twice within it publishes it once). A lifecycle message's
// signature covers its id, so the copy is signed afresh by this bus's
// user — admin, the only user that may publish on every service's
// subjects — and only after the original signature is checked against the
// trust file: a message its producer did not sign (forged, moved,
// unsigned) is refused here, never re-signed into one the consumers
// believe. A dead letter written before dead letters kept the original's
// id (Gf-Dlq-Msg-Id) cannot be checked, and is refused too. Every
// consumer of the subject gets the copy, as they got the original. It
// returns the copy's sequence in the stream that stores it.
func (b *Bus) Replay(ctx context.Context, d DeadLetter) (uint64, error) {
	id := d.Headers.Get(HeaderDLQMsgID)
	if id == "" {
		return 0, fmt.Errorf("dead letter %d: %w: it does not carry the original's message id (%s; dead letters written by older versions do not), "+
			"so the original's signature, which covers it, cannot be checked", d.Seq, ErrNotReplayable, HeaderDLQMsgID)
	}
	lifecycle := strings.HasPrefix(d.Subject, SubjectCommands) || strings.HasPrefix(d.Subject, SubjectEvents)
	if !lifecycle && !triggerSubject(d.Subject) {
		// Any service's seed may write a dead letter: one naming a bucket's
		// or NATS's own subject is not published there as admin.
		return 0, fmt.Errorf("dead letter %d: %w: its subject %q is neither a lifecycle message's nor a trigger event's", d.Seq, ErrNotReplayable, d.Subject)
	}
	msg := nats.NewMsg(d.Subject)
	msg.Data = d.Data
	for k, vs := range d.Headers {
		if strings.HasPrefix(k, "Gf-Dlq-") || k == nats.MsgIdHdr {
			continue
		}
		for _, v := range vs {
			msg.Header.Add(k, v)
		}
	}
	msg.Header.Set(nats.MsgIdHdr, id)
	if lifecycle {
		if err := b.sig.verifyEvent(msg.Subject, msg.Header, msg.Data); err != nil {
			return 0, fmt.Errorf("dead letter %d: %w: %v — it is not what its producer signed", d.Seq, ErrNotReplayable, err)
		}
	}
	msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("replay-%d-%s", d.Seq, id))
	msg.Header.Set(HeaderReplayOf, strconv.FormatUint(d.Seq, 10))
	if lifecycle {
		msg.Header.Del(HeaderSigner)
		msg.Header.Del(HeaderSignature)
		if err := b.sig.signEvent(msg); err != nil {
			return 0, err
		}
	}
	ack, err := b.publishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("replay dead letter %d on %s: %w", d.Seq, d.Subject, err)
	}
	if ack.Duplicate {
		return 0, fmt.Errorf("dead letter %d: %w again yet: it was replayed within the stream's de-duplication window (%s), as stream %s's sequence %d",
			d.Seq, ErrNotReplayable, lifecycleStream.Duplicates, ack.Stream, ack.Sequence)
	}
	return ack.Sequence, nil
}

// triggerSubject reports whether subject is one the trigger user may
// publish on (triggerDeny, and no user's inbox): where a dead-lettered
// trigger event came from.
func triggerSubject(subject string) bool {
	if subject == "" || strings.HasPrefix(subject, "$") || strings.HasPrefix(subject, "_INBOX") {
		return false
	}
	for _, deny := range triggerDeny {
		if strings.HasPrefix(subject, strings.TrimSuffix(deny, ">")) {
			return false
		}
	}
	return true
}

// deadLetterContent is what a dead letter's signature covers: what the
// dead-lettering service says (subject, reason and kind, consumer,
// deliveries, sequence), the original's id and standard headers, and the
// body.
func deadLetterContent(h nats.Header, data []byte) []byte {
	return fields([]byte("gf-dlq-v1"), []byte(h.Get(HeaderDLQSubject)), []byte(h.Get(HeaderDLQReason)), []byte(h.Get(HeaderDLQKind)),
		[]byte(h.Get(HeaderDLQConsume)), []byte(h.Get(HeaderDLQDeliver)), []byte(h.Get(HeaderDLQStream)), []byte(h.Get(HeaderDLQMsgID)),
		[]byte(h.Get(HeaderType)), []byte(h.Get(HeaderVersion)), []byte(h.Get(HeaderExperiment)), []byte(h.Get(HeaderRun)),
		[]byte(h.Get(HeaderProducer)), data)
}

// signDeadLetter adds the dead-lettering service's signature to dl.
func (s *signer) signDeadLetter(dl *nats.Msg) error {
	if s == nil {
		return nil
	}
	sig, err := s.sign(deadLetterContent(dl.Header, dl.Data))
	if err != nil {
		return fmt.Errorf("sign dead letter: %w", err)
	}
	dl.Header.Set(HeaderDLQSigner, s.pub)
	dl.Header.Set(HeaderDLQSignature, base64.RawURLEncoding.EncodeToString(sig))
	return nil
}

// verifyDeadLetter checks that a dead letter was signed by admin or by the
// service whose consumer it names (a service's durable names are its name,
// or begin with its name and "-": TestConsumerNamesBeginWithTheirService).
func (s *signer) verifyDeadLetter(h nats.Header, data []byte) error {
	if s == nil {
		return nil
	}
	user, err := s.check(h.Get(HeaderDLQSigner), h.Get(HeaderDLQSignature), deadLetterContent(h, data))
	if err != nil {
		return err
	}
	consumer := h.Get(HeaderDLQConsume)
	if user != UserAdmin && consumer != user && !strings.HasPrefix(consumer, user+"-") {
		return fmt.Errorf("signed by %s, which does not run consumer %q: %w", user, consumer, ErrUnverified)
	}
	return nil
}
