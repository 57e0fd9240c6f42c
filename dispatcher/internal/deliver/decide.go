package deliver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jethook/jethook/shared/backoff"
	"github.com/jethook/jethook/shared/consume"
)

// result is what one delivery of one message came to.
type result struct {
	eventID string
	orderID string
	// attempts counts the HTTP attempts made so far, this one included:
	// deliveries that were held are not among them.
	attempts uint64
	status   int   // the receiver's HTTP status, 0 when none
	err      error // nil when the receiver answered 2xx
	// attempted says an HTTP attempt was made: a body that is no event,
	// or a delivery past MAX_DELIVER, posts nothing.
	attempted bool
}

// policy is what decide needs of the settings.
type policy struct {
	retryBase, retryMax time.Duration
	maxDeliver          int
}

// refusedStatuses are answers that judge the webhook itself, not the
// receiver's state: a malformed or oversized body, a media type or content
// it will not take. Resending the same bytes cannot change them, so the
// event is dead-lettered at once (replay it once the receiver is fixed)
// instead of being retried for hours. Every other status, 401, 403, 404
// and 409 among them, may be the receiver's passing state and is retried.
var refusedStatuses = map[int]bool{
	http.StatusBadRequest:            true,
	http.StatusRequestEntityTooLarge: true,
	http.StatusUnsupportedMediaType:  true,
	http.StatusUnprocessableEntity:   true,
}

// decide is the one place that turns a delivery's result into what
// becomes of the event: delivered → ack (confirmed, since a lost ack costs
// a duplicate webhook); a body that is not an event, a refused content or
// no attempts left → dead-letter; any other failure → redelivery after the
// backoff, or after the receiver's Retry-After on 429 and 503 when that is
// longer. Retry-After is a floor, never a replacement: a receiver asking
// for 1 s cannot make the attempts run out in seconds, and one asking for
// a day waits RETRY_MAX. decide never asks for an immediate redelivery,
// which would turn a failing receiver into a hot loop.
func decide(p policy, r result) consume.Decision {
	attrs := []slog.Attr{
		slog.String("event_id", r.eventID), slog.String("order_id", r.orderID), slog.Int("status", r.status),
	}
	var permanent *PermanentError
	var status *StatusError
	switch {
	case r.err == nil:
		return consume.AckConfirmed(outcomeDelivered, attrs...)
	case errors.As(r.err, &permanent):
		return deadLettered(r, reasonPermanent, attrs)
	case errors.Is(r.err, errInterrupted):
		// Our own shutdown is no reason to give an event up; if this was
		// its last attempt, the next delivery dead-letters it without one.
		return consume.Retry(outcomeRetry, p.retryBase, r.err, attrs...)
	case errors.Is(r.err, ErrExhausted):
		return deadLettered(r, reasonMaxDeliveries, attrs)
	case errors.As(r.err, &status) && status.Status == http.StatusGone:
		// Standard Webhooks: the endpoint is gone for good.
		return deadLettered(r, reasonGone, attrs)
	case errors.As(r.err, &status) && refusedStatuses[status.Status]:
		r.err = fmt.Errorf("%w: %w", errRefused, r.err)
		return deadLettered(r, reasonRefused, attrs)
	case r.attempts >= uint64(p.maxDeliver):
		return deadLettered(r, reasonMaxDeliveries, attrs)
	}
	delay := backoff.Exponential(p.retryBase, p.retryMax, max(r.attempts, 1))
	if errors.As(r.err, &status) && status.HasRetryAfter &&
		(status.Status == http.StatusTooManyRequests || status.Status == http.StatusServiceUnavailable) {
		delay = min(max(delay, status.RetryAfter), p.retryMax)
	}
	return consume.Retry(outcomeRetry, delay, r.err, attrs...)
}

func deadLettered(r result, reason string, attrs []slog.Attr) consume.Decision {
	return consume.DeadLetter(outcomeDeadLettered, reason, r.err, attrs...).
		WithHeader(consume.HeaderAttempts, strconv.FormatUint(r.attempts, 10)).
		WithHeader(consume.HeaderLastStatus, strconv.Itoa(r.status)).
		WithHeader(consume.HeaderEventID, r.eventID)
}

// lastToken returns the order id of an "orders.paid.<order_id>" subject.
func lastToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}
