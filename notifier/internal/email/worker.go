package email

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/shared/backoff"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
)

// Sender delivers one email; an error means it was not delivered and may be
// tried again.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// ConsumerConfig is the durable pull consumer the worker reads subject from.
// The server never gives up on a message (MaxDeliver -1): an email must not
// be dropped silently, and the worker spaces its own retries with
// NakWithDelay, which is why there is no BackOff list to add up with it.
// ackWait must outlast the handling of one message.
func ConsumerConfig(subject string, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       natsx.ConsumerEmail,
		Description:   "sends order confirmation emails",
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		// A message waiting out its NakWithDelay counts as ack pending
		// until it is redelivered. With a low limit, a few dozen emails
		// the mail server refuses would fill it and keep every new
		// message from being delivered at all; the worker handles one
		// message at a time anyway, so this only has to stay above the
		// number of messages that may be waiting for a retry at once.
		MaxAckPending: 1000,
	}
}

// Worker sends the confirmation email of each message of a consumer, one
// message at a time.
type Worker struct {
	Store  *processed.Store
	Sender Sender
	Logger *slog.Logger
	// Metrics counts the emails; nil counts nothing.
	Metrics *Metrics
	// RetryBase and RetryMax bound the exponential delay before a failed
	// email is tried again.
	RetryBase, RetryMax time.Duration
	// BusyDelay is how long a message waits while another worker holds its
	// event id; zero means 5 s.
	BusyDelay time.Duration
	// MessageTimeout bounds the handling of one message and must be shorter
	// than the consumer's AckWait; zero means 30 s.
	MessageTimeout time.Duration
	// Grace is how long the message in flight may still run once Run's
	// context ends; zero means 5 s.
	Grace time.Duration
	// DoneRetryMax is how long the worker keeps trying to record a sent
	// email as done (while NATS is away) before it settles the message
	// anyway; zero means the store's claim TTL.
	DoneRetryMax time.Duration
	// Provision, when not nil, creates or updates the stream, bucket and
	// consumer the worker needs and returns the consumer. Run calls it
	// whenever pulling fails, before it pulls again, so that a consumer
	// or stream deleted while the worker runs is created again.
	Provision func(context.Context) (jetstream.Consumer, error)
}

// doneTryTimeout bounds one attempt to record a sent email as done.
const doneTryTimeout = 5 * time.Second

// Run pulls and handles messages of cons until ctx ends, then lets the
// message in flight finish (for at most Grace) and returns nil. Messages
// prefetched but not started are left to JetStream, which redelivers them
// after AckWait. With Provision set, cons may be nil: Run provisions first.
func (w *Worker) Run(ctx context.Context, cons jetstream.Consumer) error {
	// In-flight work runs on its own context so that a shutdown does not
	// cut a send in half; it is cancelled Grace after ctx ends, so that a
	// hung mail server cannot hold the process.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(orDefault(w.Grace, 5*time.Second), cancelWork) })
	defer stopGrace()

	for ctx.Err() == nil {
		if cons == nil {
			c, err := w.provision(ctx)
			if err != nil {
				if ctx.Err() == nil {
					w.Logger.Warn("provisioning NATS for the email worker failed, retrying", "error", err)
					sleep(ctx, time.Second)
				}
				continue
			}
			cons = c
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(1), natsx.PullExpiry)
		if err != nil {
			w.Logger.Warn("pull from NOTIFICATIONS failed, retrying", "error", err)
			w.forget(&cons)
			sleep(ctx, time.Second)
			continue
		}
		err = w.consume(ctx, work, it)
		it.Stop()
		if err != nil && ctx.Err() == nil {
			w.Logger.Warn("pull from NOTIFICATIONS interrupted, resubscribing", "error", err)
			w.forget(&cons)
			sleep(ctx, time.Second)
		}
	}
	return nil
}

// forget drops the consumer after pulling failed, when the worker can
// provision a new one: the consumer (or its stream) may have been deleted,
// and pulling from it again would fail for as long as the process lives.
// Provisioning again is harmless when it was only a NATS outage.
func (w *Worker) forget(cons *jetstream.Consumer) {
	if w.Provision != nil {
		*cons = nil
	}
}

// provision runs Provision once, bounded by 5 s.
func (w *Worker) provision(ctx context.Context) (jetstream.Consumer, error) {
	if w.Provision == nil {
		return nil, errors.New("no consumer and no way to provision one")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := w.Provision(ctx)
	if err != nil {
		return nil, err
	}
	w.Logger.Info("NATS provisioned for the email worker", "stream", natsx.StreamNotifications, "consumer", natsx.ConsumerEmail)
	return cons, nil
}

func (w *Worker) consume(ctx, work context.Context, it jetstream.MessagesContext) error {
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		msgCtx, cancel := context.WithTimeout(work, orDefault(w.MessageTimeout, 30*time.Second))
		w.process(work, msgCtx, msg)
		cancel()
	}
}

// action is what happens to a message once it has been handled.
type action int

const (
	ack       action = iota // nothing to do: the email was sent before
	doubleAck               // the email was sent now; a lost ack would resend it
	retry                   // try again after delay
	term                    // the message can never succeed
)

// decision is the outcome of handling one message. Errors carry their
// decision here, and settle is the one place that acts on it.
type decision struct {
	action  action
	outcome string
	delay   time.Duration
	err     error
}

// process handles msg within ctx; work, which outlives ctx (it ends Grace
// after shutdown begins), bounds recording an email already sent.
func (w *Worker) process(work, ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	var attempt uint64 = 1
	if md, err := msg.Metadata(); err == nil {
		attempt = md.NumDelivered
	}
	ev, d := w.handle(work, ctx, msg, attempt)
	settleErr := w.settle(ctx, msg, d)
	w.Metrics.handled(d.outcome)

	attrs := []any{
		"event_id", ev.ID, "order_id", ev.Data.OrderID, "attempt", attempt,
		"outcome", d.outcome, "duration_ms", time.Since(start).Milliseconds(),
	}
	if d.action == retry {
		attrs = append(attrs, "retry_in", d.delay.String())
	}
	level := slog.LevelInfo
	if d.err != nil {
		if code := smtpCode(d.err); code != 0 {
			attrs = append(attrs, "smtp_code", code)
		}
		attrs = append(attrs, "error", d.err)
		level = slog.LevelWarn
		if d.action != retry {
			level = slog.LevelError
		}
	}
	w.Logger.Log(ctx, level, "email "+d.outcome, attrs...)
	if d.outcome == "sent_unrecorded" {
		// The window that remains: nothing here can undo the send.
		w.Logger.Error("email sent but not recorded as done: if this message is redelivered (its ack is lost too) "+
			"or its webhook is retried after the claim expires, the email goes out a second time",
			"event_id", ev.ID, "order_id", ev.Data.OrderID)
	}
	if settleErr != nil {
		w.Logger.Warn("settling the message failed; JetStream will redeliver it",
			"event_id", ev.ID, "outcome", d.outcome, "error", settleErr)
	}
}

// handle claims the event, sends its email and records it, and returns
// what should happen to the message.
func (w *Worker) handle(work, ctx context.Context, msg jetstream.Msg, attempt uint64) (event.OrderPaid, decision) {
	ev, err := event.Decode(msg.Data())
	if err != nil {
		// The handler validated the body before publishing it, so this is
		// corruption or a foreign publisher; no retry can fix it.
		return ev, decision{action: term, outcome: "undecodable", err: err}
	}
	rev, err := w.Store.Claim(ctx, ev.ID, owner(msg))
	switch {
	case errors.Is(err, processed.ErrDone):
		return ev, decision{action: ack, outcome: "duplicate"}
	case errors.Is(err, processed.ErrClaimed):
		return ev, decision{action: retry, outcome: "claimed_elsewhere", delay: orDefault(w.BusyDelay, 5*time.Second)}
	case err != nil:
		return ev, decision{action: retry, outcome: "store_failed", delay: w.backoff(attempt), err: err}
	}

	// A slow mail server must not make JetStream hand the message to
	// another worker while this one is still sending.
	_ = msg.InProgress()
	start := time.Now()
	err = w.Sender.Send(ctx, NewMessage(ev))
	w.Metrics.sendTook(time.Since(start))
	if err != nil {
		// The send may have ended because ctx did; releasing must not.
		relCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := w.Store.Release(relCtx, ev.ID, rev); rerr != nil {
			// The claim expires on its own; until then redeliveries wait.
			err = errors.Join(err, rerr)
		}
		return ev, decision{action: retry, outcome: "send_failed", delay: w.backoff(attempt), err: err}
	}
	if err := w.recordDone(work, msg, ev, rev); err != nil {
		// The email is out, so the message is acked all the same: a retry
		// would send it twice. The claim keeps duplicates away until it
		// expires.
		return ev, decision{action: doubleAck, outcome: "sent_unrecorded", err: err}
	}
	return ev, decision{action: doubleAck, outcome: "sent"}
}

// recordDone marks ev done once its email is out, and keeps trying while
// NATS is away: until it succeeds, work ends (Grace after shutdown begins)
// or DoneRetryMax passes. Giving up at the first failure would be worse than
// waiting: the ack that follows usually fails too, and the message comes
// back after AckWait, finds the claim its own delivery left, takes it over
// and sends the email again. Between attempts the message is marked in
// progress, so that AckWait does not run out while NATS is reachable.
func (w *Worker) recordDone(work context.Context, msg jetstream.Msg, ev event.OrderPaid, rev uint64) error {
	ctx, cancel := context.WithTimeout(work, orDefault(w.DoneRetryMax, w.Store.ClaimTTL()))
	defer cancel()
	for attempt := uint64(1); ; attempt++ {
		tryCtx, cancelTry := context.WithTimeout(ctx, doneTryTimeout)
		err := w.Store.MarkDone(tryCtx, ev.ID, rev)
		cancelTry()
		if err == nil {
			if attempt > 1 {
				w.Logger.Info("sent email recorded as done", "event_id", ev.ID, "attempts", attempt)
			}
			return nil
		}
		if attempt == 1 {
			w.Logger.Warn("recording a sent email as done failed; retrying before settling the message",
				"event_id", ev.ID, "error", err)
		}
		t := time.NewTimer(backoff.Exponential(100*time.Millisecond, 2*time.Second, attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up after %d attempts (%w): %w", attempt, context.Cause(ctx), err)
		case <-t.C:
		}
		_ = msg.InProgress()
	}
}

// settle acknowledges, delays or terminates msg as d says.
func (w *Worker) settle(ctx context.Context, msg jetstream.Msg, d decision) error {
	switch d.action {
	case ack:
		return msg.Ack()
	case doubleAck:
		ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return msg.DoubleAck(ackCtx)
	case retry:
		return msg.NakWithDelay(d.delay)
	default:
		return msg.TermWithReason(d.outcome + ": " + d.err.Error())
	}
}

// owner names the message for its claim: its NOTIFICATIONS stream
// sequence, which every redelivery of it shares and no other message has.
func owner(msg jetstream.Msg) string {
	md, err := msg.Metadata()
	if err != nil {
		return ""
	}
	return "seq-" + strconv.FormatUint(md.Sequence.Stream, 10)
}

// backoff is the delay before attempt+1: RetryBase doubled per attempt,
// capped at RetryMax, with equal jitter so that emails that failed together
// do not all retry together.
func (w *Worker) backoff(attempt uint64) time.Duration {
	return backoff.Exponential(orDefault(w.RetryBase, time.Second), orDefault(w.RetryMax, 5*time.Minute), attempt)
}

// smtpCode returns the reply code of the SMTP server's refusal behind err,
// or 0 when the server did not refuse (a timeout, a refused connection).
func smtpCode(err error) int {
	var tp *textproto.Error
	if errors.As(err, &tp) {
		return tp.Code
	}
	return 0
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
