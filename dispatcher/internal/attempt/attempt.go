package attempt

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/history"
	"github.com/jethook/jethook/shared/natsx"
)

// Sources of an attempt: which stream the webhook came from.
const (
	SourceEvent   = "event"   // the subscription's own consumer on ORDERS
	SourceReplay  = "replay"  // a replayed dead letter, through REDELIVERIES
	SourceRecover = "recover" // a recovered time range, through REDELIVERIES
	SourcePing    = "ping"    // a webhook.test sent by POST …/ping
)

// Outcomes of an attempt, as the admin API filters them.
const (
	OutcomeDelivered    = "delivered"
	OutcomeRetry        = "retry"
	OutcomeDeadLettered = "dead_lettered"
	OutcomeFailed       = "failed" // a ping that was not answered 2xx
)

// MaxResponse bounds the excerpt of the receiver's answer kept per attempt.
const MaxResponse = 1 << 10

// Record is one HTTP attempt of one webhook.
type Record struct {
	SubscriptionID string `json:"subscription_id"`
	EventID        string `json:"event_id"`
	// Attempt counts the HTTP attempts of the webhook from its source, 1
	// for the first. A delivery that was held (the subscription disabled,
	// its breaker open, its rate limit) made none and is not counted.
	Attempt    uint64    `json:"attempt"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS int64     `json:"duration_ms"`
	// Status is the receiver's HTTP status, 0 when it did not answer.
	Status  int    `json:"status"`
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// Response is the start of the receiver's answer, at most
	// MaxResponse bytes of valid UTF-8.
	Response string `json:"response,omitempty"`
	// NextRetryAt is when the webhook is tried again, for a retry.
	NextRetryAt *time.Time `json:"next_retry_at"`
	Source      string     `json:"source"`
	// StreamSeq is the event's sequence in ORDERS, and AckFloor the
	// subscription consumer's ack floor when the attempt was made: a
	// consumer created again for the subscription resumes there instead
	// of replaying the stream.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	AckFloor  uint64 `json:"ack_floor,omitempty"`
	// MessageSeq is the delivered message's sequence in the stream it
	// came from (ORDERS, or REDELIVERIES for a replay or a recovery): the
	// attempts that share it are one series, counted by Attempt.
	MessageSeq uint64 `json:"message_seq,omitempty"`
}

// Log publishes attempt records. Publishing does not wait for the server:
// a record lost in a NATS outage costs a line of history, never a
// webhook.
type Log struct {
	js  jetstream.JetStream
	log *slog.Logger
	// streamHandle caches DELIVERY_ATTEMPTS for Last.
	streamHandle atomic.Pointer[jetstream.Stream]
}

// NewLog returns a Log publishing on js.
func NewLog(js jetstream.JetStream, logger *slog.Logger) *Log { return &Log{js: js, log: logger} }

// Add publishes r.
func (l *Log) Add(r Record) {
	if l == nil {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		l.log.Error("attempt record not encoded", "error", err)
		return
	}
	msg := nats.NewMsg(natsx.AttemptSubject(r.SubscriptionID, r.EventID))
	msg.Data = b
	msg.Header.Set(jetstream.ExpectedStreamHeader, natsx.StreamAttempts)
	// A plain publish, without a reply subject: the stream stores it all
	// the same, and the server sends no PubAck that nobody would read. An
	// asynchronous publish would also wait, once 4,000 acks are
	// outstanding, before it lets the delivery go on.
	if err := l.js.Conn().PublishMsg(msg); err != nil {
		l.log.Debug("attempt record not published", "subscription_id", r.SubscriptionID, "event_id", r.EventID, "error", err)
	}
}

// LastAckFloor returns the ack floor recorded by the newest attempt of
// subscription subID, or 0 when there is none.
func LastAckFloor(ctx context.Context, js jetstream.JetStream, subID string) (uint64, error) {
	s, err := js.Stream(ctx, natsx.StreamAttempts)
	if err != nil {
		return 0, err
	}
	m, err := s.GetLastMsgForSubject(ctx, natsx.AttemptFilter(subID))
	if err != nil {
		if errIsNotFound(err) {
			return 0, nil
		}
		return 0, err
	}
	var r Record
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return 0, nil
	}
	return r.AckFloor, nil
}

// Last returns the newest attempt of event eventID to subscription subID
// that match accepts, and false when there is none. The newest record of
// the event usually is the one: only when it is not (two series of the
// event run at once, say a recovery beside the subscription's own
// retries) are older ones read, at most maxScan pages of them.
func (l *Log) Last(ctx context.Context, subID, eventID string, match func(Record) bool) (Record, bool, error) {
	if l == nil {
		return Record{}, false, nil
	}
	s, err := l.stream(ctx)
	if err != nil {
		return Record{}, false, err
	}
	m, err := s.GetLastMsgForSubject(ctx, natsx.AttemptSubject(subID, eventID))
	if errIsNotFound(err) {
		return Record{}, false, nil
	}
	if err != nil {
		l.streamHandle.Store(nil) // found again on the next call
		return Record{}, false, err
	}
	var r Record
	if json.Unmarshal(m.Data, &r) == nil && match(r) {
		return r, true, nil
	}
	q := Query{SubscriptionID: subID, EventID: eventID, Limit: 1, Before: m.Sequence}
	for range maxScan {
		var found Record
		p, err := history.Newest(ctx, s, history.Query{
			Filter: q.Filter(), Before: q.Before, Limit: 1,
			Keep: func(m *jetstream.RawStreamMsg) bool {
				var r Record
				if json.Unmarshal(m.Data, &r) != nil || !match(r) {
					return false
				}
				found = r
				return true
			},
		})
		if err != nil {
			return Record{}, false, err
		}
		if len(p.Msgs) > 0 {
			return found, true, nil
		}
		if p.Next == 0 {
			return Record{}, false, nil
		}
		q.Before = p.Next
	}
	return Record{}, false, nil
}

// maxScan bounds the pages Last reads past the newest record.
const maxScan = 16

// stream returns DELIVERY_ATTEMPTS, looked up once.
func (l *Log) stream(ctx context.Context) (jetstream.Stream, error) {
	if s := l.streamHandle.Load(); s != nil {
		return *s, nil
	}
	s, err := l.js.Stream(ctx, natsx.StreamAttempts)
	if err != nil {
		return nil, err
	}
	l.streamHandle.Store(&s)
	return s, nil
}

func errIsNotFound(err error) bool { return errors.Is(err, jetstream.ErrMsgNotFound) }

// Excerpt returns the start of b as valid UTF-8 of at most MaxResponse bytes.
func Excerpt(b []byte) string {
	if len(b) > MaxResponse {
		b = b[:MaxResponse]
	}
	return strings.ToValidUTF8(string(b), "")
}
