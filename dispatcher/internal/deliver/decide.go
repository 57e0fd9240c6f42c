package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/backoff"
)

// settleTimeout bounds each call to the server that settles a message
// (double ack, dead-letter publish).
const settleTimeout = 5 * time.Second

// attempt is what one delivery of one message came to.
type attempt struct {
	eventID  string
	orderID  string
	delivery uint64 // JetStream's NumDelivered, 1 for the first attempt
	attempts uint64 // HTTP attempts made so far, this one included
	status   int    // the receiver's HTTP status, 0 when none
	err      error  // nil when the receiver answered 2xx
	duration time.Duration
}

type verdict int

const (
	ack verdict = iota
	retry
	deadLetter
)

// decision is how a message is settled.
type decision struct {
	verdict verdict
	delay   time.Duration // before the redelivery, for retry
	reason  string        // why the event was given up, for deadLetter
}

// decide is the one place that turns an attempt's error into what happens
// to the message: delivered → ack; permanent failure or no attempts left →
// dead-letter; any other failure → redelivery after a backoff, or after the
// receiver's Retry-After on 429 and 503. It never asks for an immediate
// redelivery, which would turn a failing receiver into a hot loop.
func (d *Dispatcher) decide(err error, delivery uint64) decision {
	var permanent *PermanentError
	var status *StatusError
	switch {
	case err == nil:
		return decision{verdict: ack}
	case errors.As(err, &permanent):
		return decision{verdict: deadLetter, reason: reasonPermanent}
	case errors.Is(err, errInterrupted):
		// Our own shutdown is no reason to give an event up; if this was
		// its last attempt, the next delivery dead-letters it without an
		// attempt.
		return decision{verdict: retry, delay: d.set.RetryBase}
	case errors.Is(err, ErrExhausted), delivery >= uint64(d.set.MaxDeliver):
		return decision{verdict: deadLetter, reason: reasonMaxDeliveries}
	case errors.As(err, &status) && status.HasRetryAfter &&
		(status.Status == http.StatusTooManyRequests || status.Status == http.StatusServiceUnavailable):
		return decision{verdict: retry, delay: clamp(status.RetryAfter, d.set.RetryBase, d.set.RetryMax)}
	default:
		return decision{verdict: retry, delay: backoff.Exponential(d.set.RetryBase, d.set.RetryMax, delivery)}
	}
}

// handle makes one delivery attempt for msg and settles it. ctx cancels the
// HTTP attempt; settle uses a context of its own so that a message whose
// attempt finished is always settled, also during shutdown.
func (d *Dispatcher) handle(ctx, settleCtx context.Context, msg jetstream.Msg) {
	// The pull may have buffered msg for as long as a worker took to become
	// free, and AckWait covers one attempt only: restart it now, or the
	// server redelivers msg while it is being posted.
	if err := msg.InProgress(); err != nil {
		d.log.Warn("could not mark message in progress; it may be delivered again", "subject", msg.Subject(), "error", err.Error())
	}
	meta, err := msg.Metadata()
	if err != nil {
		// A pull consumer only hands out JetStream messages, so this is a
		// protocol surprise; the server redelivers after AckWait.
		d.log.Error("message without JetStream metadata", "subject", msg.Subject(), "error", err)
		return
	}
	// Deliveries that did not post, such as those arriving past
	// MAX_DELIVER, are not counted as attempts: at most MAX_DELIVER
	// earlier deliveries posted.
	a := attempt{
		orderID:  lastToken(msg.Subject()),
		delivery: meta.NumDelivered,
		attempts: min(meta.NumDelivered-1, uint64(d.set.MaxDeliver)),
	}
	id, err := eventID(msg.Data())
	a.eventID = id
	switch {
	case err != nil:
		a.err = &PermanentError{Err: err}
		a.attempts = 0 // no delivery of this body ever posts
	case meta.NumDelivered > uint64(d.set.MaxDeliver):
		a.err = fmt.Errorf("%w: delivery %d of an event allowed %d attempts; "+
			"the earlier ones did not finish or their dead-letter copy failed",
			ErrExhausted, meta.NumDelivered, d.set.MaxDeliver)
	default:
		start := time.Now()
		a.attempts++
		a.status, a.err = d.post(ctx, id, msg.Data())
		a.duration = time.Since(start)
		d.metrics.attempted(a)
	}
	d.settle(settleCtx, msg, meta, a, d.decide(a.err, a.delivery))
}

// settle carries out the decision, and logs and counts the attempt, one
// line and one outcome each.
func (d *Dispatcher) settle(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, a attempt, dec decision) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	log := d.log.With(
		slog.String("event_id", a.eventID),
		slog.String("order_id", a.orderID),
		slog.Uint64("attempt", a.delivery),
		slog.Int("status", a.status),
		slog.Int64("duration_ms", a.duration.Milliseconds()),
	)
	switch dec.verdict {
	case ack:
		d.metrics.settled(a, outcomeDelivered, "")
		// A lost ack costs a duplicate webhook, so wait for the server to
		// confirm it.
		if err := msg.DoubleAck(ctx); err != nil {
			log.Warn("webhook delivered, ack not confirmed; it may be delivered again",
				"outcome", outcomeDelivered, "error", err.Error())
			return
		}
		log.Info("webhook delivered", "outcome", outcomeDelivered)

	case retry:
		d.metrics.settled(a, outcomeRetry, "")
		if err := msg.NakWithDelay(dec.delay); err != nil {
			log.Warn("webhook failed and nak failed; the server redelivers after AckWait",
				"outcome", outcomeRetry, "error", errors.Join(a.err, err).Error())
			return
		}
		log.Warn("webhook failed, will retry", "outcome", outcomeRetry, "retry_in", dec.delay.String(), "error", a.err.Error())

	case deadLetter:
		if err := d.deadLetter(ctx, msg, meta, a); err != nil {
			// Never terminate without the copy: try again later.
			delay := backoff.Exponential(d.set.RetryBase, d.set.RetryMax, a.delivery)
			if nakErr := msg.NakWithDelay(delay); nakErr != nil {
				err = errors.Join(err, nakErr)
			}
			d.metrics.settled(a, outcomeRetry, "")
			log.Error("dead-letter copy failed, will retry", "outcome", outcomeRetry, "retry_in", delay.String(),
				"error", errors.Join(a.err, err).Error())
			return
		}
		d.metrics.settled(a, outcomeDeadLettered, dec.reason)
		if err := msg.TermWithReason(dec.reason); err != nil {
			// The copy is safe; a redelivery is dead-lettered again under
			// the same Nats-Msg-Id and deduplicated.
			log.Warn("dead-lettered, term failed", "outcome", outcomeDeadLettered, "reason", dec.reason,
				"error", errors.Join(a.err, err).Error())
			return
		}
		log.Error("webhook dead-lettered", "outcome", outcomeDeadLettered, "reason", dec.reason, "error", a.err.Error())
	}
}

// lastToken returns the order id of an "orders.paid.<order_id>" subject.
func lastToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}
