package consume

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Verdict is what becomes of a message.
type Verdict int

// The verdicts a handler can give.
const (
	// VerdictAck: the work is done; the message is acknowledged.
	VerdictAck Verdict = iota
	// VerdictRetry: the work failed for now; JetStream redelivers the
	// message after Decision.Delay.
	VerdictRetry
	// VerdictDeadLetter: the work can never succeed, or its attempts are
	// spent; the message is copied to DEADLETTER, then terminated.
	VerdictDeadLetter
)

func (v Verdict) String() string {
	switch v {
	case VerdictAck:
		return "ack"
	case VerdictRetry:
		return "retry"
	case VerdictDeadLetter:
		return "dead_letter"
	}
	return "unknown"
}

// Decision is a handler's verdict on one message, with what the runtime
// needs to carry it out and to report it.
type Decision struct {
	Verdict Verdict
	// Delay is how long JetStream waits before it redelivers a retried
	// message. It is never zero: an immediate redelivery of a failing
	// message is a hot loop.
	Delay time.Duration
	// Reason says why a message is dead-lettered, in a few words: the
	// text of TermWithReason and of the Jethook-Reason header.
	Reason string
	// Err is the failure behind a retry or a dead letter; it is logged and
	// becomes the Jethook-Last-Error header of a dead letter.
	Err error
	// Confirm makes the ack a double ack, confirmed by the server, where
	// a lost ack costs a duplicate (a webhook posted, an email sent).
	Confirm bool
	// Outcome names what happened in the log line and the handler's
	// metrics, such as "delivered" or "duplicate".
	Outcome string
	// Message, when set, is the log line's message; otherwise it is made
	// of the runner's noun and the outcome ("webhook delivered", "webhook
	// failed, will retry", "webhook dead-lettered").
	Message string
	// Attrs are added to the message's log line (event_id, status, …).
	Attrs []slog.Attr
	// Headers are added to the dead-letter copy, such as the last HTTP
	// status or SMTP reply (Jethook-* names).
	Headers nats.Header
	// Owner, when set, is whose dead letter this is, in place of the
	// runner's: one consumer that delivers for many subscriptions files
	// each dead letter under its subscription.
	Owner string
	// Detail is the handler's own account of the work, for its Observe.
	Detail any
}

// Ack is the decision for work that is done.
func Ack(outcome string, attrs ...slog.Attr) Decision {
	return Decision{Verdict: VerdictAck, Outcome: outcome, Attrs: attrs}
}

// AckConfirmed is Ack with a double ack, for work whose repetition the
// outside world would notice.
func AckConfirmed(outcome string, attrs ...slog.Attr) Decision {
	return Decision{Verdict: VerdictAck, Confirm: true, Outcome: outcome, Attrs: attrs}
}

// Retry is the decision for work that failed for now.
func Retry(outcome string, delay time.Duration, err error, attrs ...slog.Attr) Decision {
	return Decision{Verdict: VerdictRetry, Delay: delay, Err: err, Outcome: outcome, Attrs: attrs}
}

// DeadLetter is the decision for work that can never succeed.
func DeadLetter(outcome, reason string, err error, attrs ...slog.Attr) Decision {
	return Decision{Verdict: VerdictDeadLetter, Reason: reason, Err: err, Outcome: outcome, Attrs: attrs}
}

// WithHeader returns d with a dead-letter header added.
func (d Decision) WithHeader(key, value string) Decision {
	if d.Headers == nil {
		d.Headers = nats.Header{}
	}
	d.Headers.Set(key, HeaderValue(value))
	return d
}

// Attr returns the value of the log attribute key, if the decision has it.
func (d Decision) Attr(key string) (slog.Value, bool) {
	for _, a := range d.Attrs {
		if a.Key == key {
			return a.Value, true
		}
	}
	return slog.Value{}, false
}
