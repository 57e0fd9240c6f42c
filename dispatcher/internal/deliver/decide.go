package deliver

import (
	"context"
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
	eventID  string
	orderID  string
	delivery uint64 // JetStream's NumDelivered, 1 for the first delivery
	attempts uint64 // HTTP attempts made so far, this one included
	status   int    // the receiver's HTTP status, 0 when none
	err      error  // nil when the receiver answered 2xx
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
	case r.delivery >= uint64(p.maxDeliver):
		return deadLettered(r, reasonMaxDeliveries, attrs)
	}
	delay := backoff.Exponential(p.retryBase, p.retryMax, r.delivery)
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

// Handle makes one delivery attempt for m and decides what becomes of it.
func (d *Dispatcher) Handle(ctx context.Context, m *consume.Msg) consume.Decision {
	// Deliveries that did not post, such as those arriving past
	// MAX_DELIVER, are not counted as attempts: at most MAX_DELIVER
	// earlier deliveries posted.
	r := result{
		orderID:  lastToken(m.Subject()),
		delivery: m.Attempt(),
		attempts: min(m.Attempt()-1, uint64(d.set.MaxDeliver)),
	}
	id, err := eventID(m.Data())
	r.eventID = id
	switch {
	case err != nil:
		r.err = &PermanentError{Err: err}
		r.attempts = 0 // no delivery of this body ever posts
	case m.Attempt() > uint64(d.set.MaxDeliver):
		r.err = fmt.Errorf("%w: delivery %d of an event allowed %d attempts; "+
			"the earlier ones did not finish or their dead-letter copy failed",
			ErrExhausted, m.Attempt(), d.set.MaxDeliver)
	default:
		start := time.Now()
		r.attempts++
		r.status, r.err = d.post(ctx, id, m.Data())
		d.metrics.attempted(time.Since(start))
	}
	return decide(d.policy(), r)
}

// lastToken returns the order id of an "orders.paid.<order_id>" subject.
func lastToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}
