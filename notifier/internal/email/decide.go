package email

import (
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/shared/backoff"
	"github.com/jethook/jethook/shared/consume"
)

// Outcomes of a message, as logged and counted.
const (
	outcomeSent             = "sent"
	outcomeSentUnrecorded   = "sent_unrecorded"
	outcomeDuplicate        = "duplicate"
	outcomeClaimedElsewhere = "claimed_elsewhere"
	outcomeSendFailed       = "send_failed"
	outcomeStoreFailed      = "store_failed"
	outcomeRefused          = "refused"
	outcomeExhausted        = "attempts_exhausted"
	outcomeUndecodable      = "undecodable"
)

// undecodableError is a message body that is not an order.paid event.
type undecodableError struct{ err error }

func (e *undecodableError) Error() string { return "not an order.paid event: " + e.err.Error() }
func (e *undecodableError) Unwrap() error { return e.err }

// unrecordedError is an email that went out but could not be recorded as
// done.
type unrecordedError struct{ err error }

func (e *unrecordedError) Error() string {
	return "email sent but not recorded as done; if its webhook comes back after the claim lapses, it is sent again: " + e.err.Error()
}
func (e *unrecordedError) Unwrap() error { return e.err }

// policy is what decide needs of the settings.
type policy struct {
	retryBase, retryMax time.Duration
	maxAttempts         int
	claimLease          time.Duration
}

// result is what handling one message came to.
type result struct {
	eventID, orderID string
	attempt          uint64 // the message's delivery count
	err              error  // nil when the email was sent and recorded
	now              time.Time
}

// decide is the one place that turns the handling of a message into what
// becomes of it: sent → ack (confirmed: a lost ack would send it again);
// sent before → ack; another live delivery holds the event → retry once
// its lease may have ended; refused for good by the relay (5xx at MAIL,
// RCPT or DATA) or not an event → dead-letter at once, with the relay's
// answer; any other failure → retry after the backoff, until the attempts
// run out, then dead-letter. A message held by another delivery is never
// dead-lettered: that delivery may be sending it.
func decide(p policy, r result) consume.Decision {
	attrs := []slog.Attr{slog.String("event_id", r.eventID), slog.String("order_id", r.orderID)}
	var (
		claimed     *processed.ClaimedError
		send        *SendError
		undecodable *undecodableError
		unrecorded  *unrecordedError
	)
	if errors.As(r.err, &send) && send.Code != 0 {
		attrs = append(attrs, slog.Int("smtp_code", send.Code))
	}
	switch {
	case r.err == nil:
		return consume.AckConfirmed(outcomeSent, attrs...)
	case errors.As(r.err, &unrecorded):
		d := consume.AckConfirmed(outcomeSentUnrecorded, attrs...)
		d.Err = r.err
		return d
	case errors.Is(r.err, processed.ErrDone):
		return consume.Ack(outcomeDuplicate, attrs...)
	case errors.As(r.err, &undecodable):
		return consume.DeadLetter(outcomeUndecodable, "not an order.paid event", r.err, attrs...)
	case errors.As(r.err, &claimed):
		wait := min(max(claimed.Until.Sub(r.now)+time.Second, time.Second), p.retryMax)
		d := consume.Retry(outcomeClaimedElsewhere, wait, r.err, attrs...)
		d.Message = "email held by another delivery, will retry"
		return d
	case send != nil && send.Permanent():
		return smtpHeaders(consume.DeadLetter(outcomeRefused, "refused by the mail relay", r.err, attrs...), send, r.eventID)
	case r.attempt >= uint64(p.maxAttempts):
		return smtpHeaders(consume.DeadLetter(outcomeExhausted, "email attempts exhausted", r.err, attrs...), send, r.eventID)
	}
	outcome := outcomeStoreFailed
	if send != nil {
		outcome = outcomeSendFailed
	}
	return consume.Retry(outcome, backoff.Exponential(p.retryBase, p.retryMax, r.attempt), r.err, attrs...)
}

// smtpHeaders adds the relay's answer to a dead letter.
func smtpHeaders(d consume.Decision, send *SendError, eventID string) consume.Decision {
	d = d.WithHeader(consume.HeaderEventID, eventID)
	if send == nil {
		return d
	}
	d = d.WithHeader(HeaderSMTPStage, send.Stage)
	if send.Code != 0 {
		d = d.WithHeader(HeaderSMTPCode, strconv.Itoa(send.Code)).
			WithHeader(HeaderSMTPReply, send.Reply).
			WithHeader(consume.HeaderLastStatus, strconv.Itoa(send.Code))
	}
	return d
}
