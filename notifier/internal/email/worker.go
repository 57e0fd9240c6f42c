package email

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/shared/backoff"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
)

// Headers a dead-lettered email carries besides the runtime's own.
const (
	HeaderSMTPCode  = "Jethook-Smtp-Code"
	HeaderSMTPReply = "Jethook-Smtp-Reply"
	HeaderSMTPStage = "Jethook-Smtp-Stage"
)

// maxAckPending is the consumer's MaxAckPending: none (-1). A message
// waiting out its NakWithDelay counts as ack pending until it is
// redelivered, so any limit is a number of emails in retry (greylisted by
// the relay, say, for the two hours of their attempts) past which every
// new email would wait too. The runtime pulls only as many messages as it
// has free workers, so no limit here lets a process take on more.
const maxAckPending = -1

// ConsumerConfig is the durable pull consumer the worker reads subject
// from. The server never gives up on a message (MaxDeliver -1): an email
// must not be dropped silently, and the worker dead-letters it itself
// after EMAIL_MAX_ATTEMPTS, spacing its retries with NakWithDelay, which
// is why there is no BackOff list to add up with it.
func ConsumerConfig(subject string, t consume.Timings) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       natsx.ConsumerEmail,
		Description:   "sends order confirmation emails",
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
}

// Worker sends the confirmation email of each message it is handed, as a
// consume.Handler: it claims the event id in the idempotency store, sends
// through Sender while it holds the claim, and records the event as done.
type Worker struct {
	Store  *processed.Store
	Sender Sender
	// Metrics counts the emails; nil counts nothing.
	Metrics *Metrics
	Logger  *slog.Logger
	// RetryBase and RetryMax bound the exponential delay before a failed
	// email is tried again; MaxAttempts bounds the deliveries a
	// temporary failure gets before the email is dead-lettered.
	RetryBase, RetryMax time.Duration
	MaxAttempts         int
	// ClaimLease is the claim's lease while the email is prepared, renewed
	// every third of it; CommitLease its lease from the final dot on.
	ClaimLease, CommitLease time.Duration
	// Instance names this process in the claims it takes; empty means a
	// random name, chosen once.
	Instance string
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	once sync.Once
	// active holds the claims of this process's deliveries that are
	// being handled, so that one left by a delivery that ended without
	// knowing whether its claim was stored can be told from a live one.
	active sync.Map
}

// storeTimeout bounds one call to the idempotency store that must not be
// cut short by the message's own context (a release after a failure).
const storeTimeout = 5 * time.Second

// errLeaseLapsing stops a send whose claim could not be renewed in time.
var errLeaseLapsing = errors.New("the claim on the event could not be renewed before its lease ends")

// margin is how much of a lease must be left for the worker to go on to
// the final dot: a holder whose lease may lapse before its renewal lands
// stops instead, since another worker may then claim the event.
func (w *Worker) margin() time.Duration { return w.ClaimLease / 4 }

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Worker) instance() string {
	w.once.Do(func() {
		if w.Instance == "" {
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			w.Instance = hex.EncodeToString(b)
		}
	})
	return w.Instance
}

// Handle claims, sends and records one email, and decides what becomes of
// its message.
func (w *Worker) Handle(ctx context.Context, m *consume.Msg) consume.Decision {
	r := result{attempt: m.Attempt()}
	ev, err := event.Decode(m.Data())
	if err != nil {
		// The handler validated the body before publishing it, so this is
		// corruption or a foreign publisher; no retry can fix it.
		r.err, r.now = &undecodableError{err}, w.now()
		return decide(w.policy(), r)
	}
	r.eventID, r.orderID = ev.ID, ev.Data.OrderID
	// The claim names this very delivery: the process, the message and
	// its delivery count, so that no other delivery, of this message or
	// of a duplicate, can pass for its holder.
	holder := w.instance() + "/" + strconv.FormatUint(m.Meta.Sequence.Stream, 10) + "/" + strconv.FormatUint(m.Attempt(), 10)
	w.active.Store(holder, struct{}{})
	defer w.active.Delete(holder)
	claim, err := w.Store.Claim(ctx, ev.ID, holder, w.ClaimLease)
	var held *processed.ClaimedError
	if errors.As(err, &held) && w.deadHere(held.Holder) {
		// An earlier delivery in this process failed without hearing
		// whether its claim was stored (NATS lost the answer): it is
		// over, so its claim is taken over now instead of lapsing.
		claim, err = w.Store.TakeOver(ctx, ev.ID, held.Rev, holder, w.ClaimLease)
	}
	if err == nil {
		err = w.send(ctx, &claim, NewMessage(ev))
	}
	r.err, r.now = err, w.now()
	return decide(w.policy(), r)
}

// deadHere reports whether holder names a delivery of this process that
// is no longer being handled.
func (w *Worker) deadHere(holder string) bool {
	if !strings.HasPrefix(holder, w.instance()+"/") {
		return false
	}
	_, live := w.active.Load(holder)
	return !live
}

// send delivers msg while it holds claim: the lease is renewed every third
// of ClaimLease until the message is committed (just before its final
// dot), when it is extended to CommitLease. A claim lost or about to lapse
// stops the send before the dot. A sent email is recorded as done; a
// failed one gives its claim up.
func (w *Worker) send(ctx context.Context, claim *processed.Claim, msg Message) error {
	sendCtx, stopSend := context.WithCancelCause(ctx)
	defer stopSend(nil)
	l := &lease{w: w, claim: claim, stop: stopSend}
	renewing := make(chan struct{})
	go func() {
		defer close(renewing)
		l.keep(sendCtx)
	}()
	start := time.Now()
	err := w.Sender.Send(sendCtx, msg, l.commit)
	w.Metrics.sendTook(time.Since(start))
	if cause := context.Cause(sendCtx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	stopSend(nil)
	<-renewing
	if err != nil {
		relCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
		if rerr := w.Store.Release(relCtx, *claim); rerr != nil {
			// The lease lapses on its own; until then redeliveries wait.
			err = errors.Join(err, rerr)
		}
		return err
	}
	if err := w.recordDone(ctx, claim); err != nil {
		return &unrecordedError{err}
	}
	return nil
}

// lease keeps one claim alive while its email is prepared.
type lease struct {
	w     *Worker
	stop  context.CancelCauseFunc
	mu    sync.Mutex // guards claim and committed
	claim *processed.Claim
	// committed is set once the final dot may go out; renewals stop.
	committed bool
}

// keep renews the lease every third of ClaimLease until it is committed
// or ctx ends. It stops the send when the claim is lost, or when renewals
// keep failing and the lease would lapse before the next one.
func (l *lease) keep(ctx context.Context) {
	t := time.NewTicker(l.w.ClaimLease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		if l.committed {
			l.mu.Unlock()
			return
		}
		err := l.w.Store.Renew(ctx, l.claim, l.w.ClaimLease)
		lapsing := err != nil && l.w.now().Add(l.w.ClaimLease/3+l.w.margin()).After(l.claim.Until)
		l.mu.Unlock()
		switch {
		case errors.Is(err, processed.ErrClaimLost):
			l.stop(err)
			return
		case lapsing:
			l.stop(fmt.Errorf("%w: %w", errLeaseLapsing, err))
			return
		}
	}
}

// commit is called just before the final dot: it stops the renewals and
// extends the lease to CommitLease, or refuses, so that the dot is not
// sent, when the claim is lost or about to lapse. A lease that already
// outlasts the wait for the answer (none, for a log line) is kept as it
// is, which saves a write.
func (l *lease) commit(ctx context.Context, wait time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.committed = true
	if l.w.now().Add(l.w.margin()).After(l.claim.Until) {
		return errLeaseLapsing
	}
	if l.w.now().Add(wait + l.w.margin()).Before(l.claim.Until) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, min(storeTimeout, time.Until(l.claim.Until)-l.w.margin()))
	defer cancel()
	return l.w.Store.Renew(ctx, l.claim, l.w.CommitLease)
}

// recordDone marks the event done once its email is out, and keeps trying
// while NATS is away: until it succeeds, the claim's lease ends, or the
// worker is stopped. Giving up at the first failure would be worse than
// waiting: the ack that follows usually fails too, the message comes back,
// finds the claim lapsed and sends the email again. The message's own
// deadline does not stop it; only a shutdown does.
func (w *Worker) recordDone(ctx context.Context, claim *processed.Claim) error {
	rec, cancel := context.WithDeadline(context.WithoutCancel(ctx), claim.Until)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	defer stop()
	for attempt := uint64(1); ; attempt++ {
		tryCtx, cancelTry := context.WithTimeout(rec, storeTimeout)
		err := w.Store.MarkDone(tryCtx, *claim)
		cancelTry()
		if err == nil {
			if attempt > 1 {
				w.Logger.Info("sent email recorded as done", "event_id", claim.EventID, "attempts", attempt)
			}
			return nil
		}
		if attempt == 1 {
			w.Logger.Warn("recording a sent email as done failed; retrying before settling the message",
				"event_id", claim.EventID, "error", err)
		}
		t := time.NewTimer(backoff.Exponential(100*time.Millisecond, 2*time.Second, attempt))
		select {
		case <-rec.Done():
			t.Stop()
			return fmt.Errorf("gave up after %d attempts (%w): %w", attempt, rec.Err(), err)
		case <-t.C:
		}
	}
}

func (w *Worker) policy() policy {
	return policy{retryBase: w.RetryBase, retryMax: w.RetryMax, maxAttempts: w.MaxAttempts, claimLease: w.ClaimLease}
}
