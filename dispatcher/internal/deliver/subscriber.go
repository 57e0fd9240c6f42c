package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/backoff"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
)

// forever is how long a disabled subscription's consumer is paused: until
// an operator enables it.
const forever = 100 * 365 * 24 * time.Hour

// storeTimeout bounds one write to the registry or one consumer change
// made on the way of a delivery.
const storeTimeout = 5 * time.Second

// subscriber runs one subscription's consumer, wh-<id>, and delivers its
// events. Its loop acts on every change of the subscription, one at a
// time: it starts the consumer's runner, restarts it when the concurrency
// or the event types change, stops it when the subscription is disabled
// or deleted, and pauses or resumes the consumer on the server as the
// status says.
type subscriber struct {
	f       *Fleet
	id      string
	log     *slog.Logger
	entry   atomic.Pointer[registry.Entry]
	limiter *rate.Limiter
	wake    chan struct{}
	gone    atomic.Bool
	// ready is set once the consumer was provisioned.
	ready atomic.Bool

	mu sync.Mutex // guards the run of failures below
	// run counts the failures in a row this process has seen, and since
	// is when the first of them was.
	run   int
	since time.Time
}

func newSubscriber(f *Fleet, e *registry.Entry) *subscriber {
	s := &subscriber{
		f: f, id: e.Subscription.ID, wake: make(chan struct{}, 1),
		log: f.log.With("subscription_id", e.Subscription.ID),
	}
	s.limiter = rate.NewLimiter(rate.Limit(e.Subscription.RateLimitPerS), max(e.Subscription.RateLimitPerS, 1))
	s.update(e)
	return s
}

// update takes a new version of the subscription.
func (s *subscriber) update(e *registry.Entry) {
	s.entry.Store(e)
	s.limiter.SetLimit(rate.Limit(e.Subscription.RateLimitPerS))
	s.limiter.SetBurst(max(e.Subscription.RateLimitPerS, 1))
	s.poke()
}

// remove stops the subscriber for good: the subscription was deleted.
func (s *subscriber) remove() {
	s.gone.Store(true)
	s.poke()
}

func (s *subscriber) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// delivering reports whether the subscription's consumer should run:
// enabled, or paused by its breaker (its consumer is paused on the
// server, and runs again by itself when the pause ends).
func (s *subscriber) delivering() bool {
	return !s.gone.Load() && s.entry.Load().Subscription.Status != subscription.StatusDisabled
}

// runKey is what a running consumer was started with; a change of it
// restarts the runner.
func runKey(e *registry.Entry) string {
	return fmt.Sprint(e.Subscription.MaxInFlight, e.Filters())
}

// running is one runner of the subscription's consumer.
type running struct {
	key    string
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *running) stop() {
	if r != nil {
		r.cancel()
		<-r.done
	}
}

// loop follows the subscription until ctx ends or it is removed.
func (s *subscriber) loop(ctx context.Context) {
	var cur *running
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			cur.stop()
			return
		case <-s.wake:
		case <-retry.C:
		}
		if s.gone.Load() {
			cur.stop()
			s.deleteConsumer()
			return
		}
		e := s.entry.Load()
		if cur != nil && (!s.delivering() || cur.key != runKey(e)) {
			cur.stop()
			cur = nil
		}
		if err := s.settlePause(ctx, e); err != nil && ctx.Err() == nil {
			s.log.Warn("could not pause or resume the subscription's consumer, retrying", "error", err)
			retry.Reset(time.Second)
		}
		if cur == nil && s.delivering() {
			cur = s.start(ctx, e)
		}
	}
}

// start runs the subscription's consumer until its context is cancelled.
func (s *subscriber) start(ctx context.Context, e *registry.Entry) *running {
	timings := s.f.set.Timings
	// A worker may wait for the rate limiter before it posts: as long as
	// it takes the limit to let every worker through.
	if r := e.Subscription.RateLimitPerS; r > 0 {
		timings.MessageTimeout += time.Duration(float64(e.Subscription.MaxInFlight) / float64(r) * float64(time.Second))
	}
	r, err := consume.New(consume.Config{
		Stream:      natsx.StreamOrders,
		Name:        natsx.SubscriptionConsumer(s.id),
		Owner:       s.id,
		Noun:        "webhook",
		Concurrency: max(e.Subscription.MaxInFlight, 1),
		Timings:     timings,
		Handle: func(ctx context.Context, m *consume.Msg) consume.Decision {
			return s.deliver(ctx, m, attempt.SourceEvent)
		},
		Provision: s.provision,
		JS:        s.f.js,
		Logger:    s.log,
		Observe:   func(st consume.Settled) { s.f.observe(s.id, st) },
	})
	run := &running{key: runKey(e), done: make(chan struct{})}
	runCtx, cancel := context.WithCancel(ctx)
	run.cancel = cancel
	if err != nil {
		s.log.Error("subscription cannot run", "error", err)
		close(run.done)
		return run
	}
	go func() {
		defer close(run.done)
		if err := r.Run(runCtx); err != nil {
			s.log.Error("subscription consumer stopped", "error", err)
		}
	}()
	return run
}

// consumerConfig is the subscription's durable consumer on ORDERS: its
// event types' subjects, explicit acks, no BackOff list (every delay is
// set with NakWithDelay, and the two would add up), deliveries counted by
// the dispatcher rather than the server (MaxDeliver -1: the server never
// drops an event on its own), and new events only: it starts at the
// subscription's creation.
func (s *subscriber) consumerConfig(e *registry.Entry) jetstream.ConsumerConfig {
	start := e.Subscription.CreatedAt
	return jetstream.ConsumerConfig{
		Durable:        natsx.SubscriptionConsumer(s.id),
		Description:    "webhooks of subscription " + s.id,
		FilterSubjects: e.Filters(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		AckWait:        s.f.set.Timings.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  maxAckPending,
		Metadata:       map[string]string{"jethook_subscription": s.id},
	}
}

// provision creates or updates the subscription's consumer. A consumer
// that is missing is created where its subscription last stood, so that
// nothing is delivered twice and nothing is skipped: from resume when it
// vanished under this process; else after the ack floor its last attempt
// recorded; else, for sub_notifier, where the dispatcher consumer of
// earlier versions stood, or from the start of ORDERS on a first start
// (as that consumer did, so that orders taken before the dispatcher first
// ran are delivered too); else from the subscription's creation.
func (s *subscriber) provision(ctx context.Context, resume uint64) (jetstream.Consumer, error) {
	if s.gone.Load() {
		return nil, errors.New("subscription deleted")
	}
	if err := s.f.Provision(ctx); err != nil {
		return nil, err
	}
	e := s.entry.Load()
	cfg := s.consumerConfig(e)
	var legacy bool
	if _, err := s.f.js.Consumer(ctx, natsx.StreamOrders, cfg.Durable); errors.Is(err, jetstream.ErrConsumerNotFound) && resume == 0 {
		resume, legacy, err = s.startingPoint(ctx, &cfg)
		if err != nil {
			return nil, err
		}
	}
	cons, err := consume.EnsureConsumer(ctx, s.f.js, natsx.StreamOrders, cfg, resume)
	if err != nil {
		return nil, err
	}
	if legacy {
		if err := s.f.js.DeleteConsumer(ctx, natsx.StreamOrders, natsx.ConsumerLegacyDispatcher); err == nil {
			s.log.Info("the dispatcher consumer of earlier versions is replaced", "consumer", cfg.Durable, "start_seq", resume)
		}
	}
	s.ready.Store(true)
	return cons, nil
}

// startingPoint says where a missing consumer starts: a stream sequence, or
// 0 for cfg's own start (which it may change to the start of the stream).
func (s *subscriber) startingPoint(ctx context.Context, cfg *jetstream.ConsumerConfig) (seq uint64, legacy bool, err error) {
	floor, err := attempt.LastAckFloor(ctx, s.f.js, s.id)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, false, fmt.Errorf("read the last attempt of %s: %w", s.id, err)
	}
	if floor > 0 {
		return floor + 1, false, nil
	}
	if s.id != subscription.NotifierID {
		return 0, false, nil
	}
	old, err := s.f.js.Consumer(ctx, natsx.StreamOrders, natsx.ConsumerLegacyDispatcher)
	if err == nil {
		return old.CachedInfo().AckFloor.Stream + 1, true, nil
	}
	cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverAllPolicy, nil
	return 0, false, nil
}

// settlePause pauses the consumer on the server while the subscription is
// paused (until its breaker's pause ends) or disabled (until enabled), and
// resumes it when it is enabled, so that `nats consumer info` tells the
// truth and no replica is handed events meanwhile.
func (s *subscriber) settlePause(ctx context.Context, e *registry.Entry) error {
	var until time.Time
	switch e.Subscription.Status {
	case subscription.StatusDisabled:
		until = s.f.now().Add(forever)
	case subscription.StatusPaused:
		if e.Health.PausedUntil == nil || !s.f.now().Before(*e.Health.PausedUntil) {
			return nil // the pause is over: the breaker waits for a probe
		}
		until = *e.Health.PausedUntil
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	cons, err := s.f.js.Consumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(s.id))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // provisioned later, and paused then if it must be
	}
	if err != nil {
		return err
	}
	info := cons.CachedInfo()
	switch {
	case until.IsZero() && info.Paused:
		_, err = s.f.js.ResumeConsumer(ctx, natsx.StreamOrders, info.Name)
	case !until.IsZero() && (!info.Paused || info.Config.PauseUntil == nil || info.Config.PauseUntil.Before(until.Add(-time.Second))):
		_, err = s.f.js.PauseConsumer(ctx, natsx.StreamOrders, info.Name, until)
	}
	return err
}

// deleteConsumer removes the consumer of a deleted subscription.
func (s *subscriber) deleteConsumer() {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	err := s.f.js.DeleteConsumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(s.id))
	if err == nil {
		s.log.Info("subscription deleted, its consumer removed", "consumer", natsx.SubscriptionConsumer(s.id))
	}
}

// deliver makes one delivery attempt of m to the subscription, decides
// what becomes of it, and keeps the subscription's health and attempt log
// up to date. source is where the event came from.
func (s *subscriber) deliver(ctx context.Context, m *consume.Msg, source string) consume.Decision {
	e := s.entry.Load()
	sub := e.Subscription
	now := s.f.now()
	var attrs []slog.Attr
	switch {
	case sub.Status == subscription.StatusDisabled:
		// Caught between the change and the consumer's stop: it waits.
		d := consume.Retry("held", s.f.set.RetryMax, errors.New("the subscription is disabled"), attrs...)
		d.Message = "webhook held: the subscription is disabled"
		return d
	case sub.Status == subscription.StatusPaused && !halfOpen(e, now):
		wait := e.Health.PausedUntil.Sub(now) + backoff.Exponential(100*time.Millisecond, time.Second, 1)
		d := consume.Retry("held", wait, errors.New("the subscription's circuit breaker is open"), attrs...)
		d.Message = "webhook held: the subscription's circuit breaker is open"
		return d
	}

	r := result{orderID: orderID(m)}
	id, err := eventID(m.Data())
	r.eventID = id
	if err == nil {
		if err := s.limiter.Wait(ctx); err != nil {
			d := consume.Retry("held", s.f.set.RetryBase, fmt.Errorf("rate limit: %w", err), attrs...)
			d.Message = "webhook held by the subscription's rate limit"
			return d
		}
		r.attempts = s.priorAttempts(ctx, m, id, source)
	}
	var ans answer
	start := time.Now()
	switch {
	case err != nil:
		r.err = &PermanentError{Err: err} // no delivery of this body ever posts
	case r.attempts >= uint64(s.f.set.MaxDeliver):
		r.err = fmt.Errorf("%w: %d attempts of an event allowed %d were made; "+
			"the last one did not finish or its dead-letter copy failed",
			ErrExhausted, r.attempts, s.f.set.MaxDeliver)
	default:
		start = time.Now()
		r.attempts++
		r.attempted = true
		ans, r.err = post(ctx, s.f.client, target{url: sub.URL, secrets: e.SigningSecrets(now)}, id, m.Data())
		r.status = ans.status
		s.f.metrics.attempted(time.Since(start))
	}
	d := decide(s.f.policy(), r)
	if r.attempted {
		s.record(m, r, ans, d, start, source)
		s.learn(ctx, e, r)
	}
	return d
}

// priorAttempts returns how many HTTP attempts the earlier deliveries of
// m made. JetStream's delivery count is not that: a delivery held by a
// disabled subscription, an open breaker or the rate limit posts nothing,
// yet counts, and counting it would dead-letter an event that was never
// tried. The attempt log knows: its newest record of this very message
// (its source and its sequence there; the same event may be in another
// series at once, a recovery beside the subscription's own retries)
// carries the number of the last attempt. No record means no attempt, or
// a record lost with a NATS outage, which lets the event try once more. A
// log that cannot be read counts none either: the attempt is made, and
// the count goes on from the log once it answers again; counting
// JetStream's deliveries instead would dead-letter an event held before.
func (s *subscriber) priorAttempts(ctx context.Context, m *consume.Msg, eventID, source string) uint64 {
	if m.Attempt() <= 1 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	seq := m.Meta.Sequence.Stream
	rec, ok, err := s.f.attempts.Last(ctx, s.id, eventID, func(r attempt.Record) bool {
		return r.Source == source && r.MessageSeq == seq
	})
	if err != nil {
		s.log.Warn("attempt log unreadable: this attempt is counted from none", "event_id", eventID, "error", err.Error())
		return 0
	}
	if !ok {
		return 0
	}
	return rec.Attempt
}

// orderID is the last token of the event's subject, orders.paid.<order id>,
// on ORDERS or, for a redelivery, in its origin header.
func orderID(m *consume.Msg) string {
	subject := m.Subject()
	if o := m.Headers().Get(consume.HeaderOriginalSubject); o != "" {
		subject = o
	}
	return lastToken(subject)
}

// record logs the attempt in DELIVERY_ATTEMPTS.
func (s *subscriber) record(m *consume.Msg, r result, ans answer, d consume.Decision, start time.Time, source string) {
	rec := attempt.Record{
		SubscriptionID: s.id, EventID: r.eventID, Attempt: r.attempts, MessageSeq: m.Meta.Sequence.Stream,
		StartedAt: start.UTC(), DurationMS: time.Since(start).Milliseconds(),
		Status: r.status, Response: ans.body, Source: source,
	}
	if source == attempt.SourceEvent {
		rec.StreamSeq, rec.AckFloor = m.Meta.Sequence.Stream, m.AckFloor
	}
	if r.err != nil {
		rec.Error = consume.HeaderValue(r.err.Error())
	}
	switch d.Verdict {
	case consume.VerdictAck:
		rec.Outcome = attempt.OutcomeDelivered
	case consume.VerdictRetry:
		rec.Outcome = attempt.OutcomeRetry
		next := time.Now().Add(d.Delay).UTC()
		rec.NextRetryAt = &next
	default:
		rec.Outcome = attempt.OutcomeDeadLettered
	}
	s.f.attempts.Add(rec)
}

// learn updates the subscription's health from one attempt: a 410
// disables it, a success closes its breaker, a failure adds to the run
// that opens it.
func (s *subscriber) learn(ctx context.Context, e *registry.Entry, r result) {
	now := s.f.now()
	switch {
	case r.status == 410:
		s.change(ctx, "the endpoint answered 410 Gone", func(sub *subscription.Subscription, h *registry.Health, now time.Time) []string {
			if sub.Status == subscription.StatusDisabled {
				return nil
			}
			sub.SetStatus(subscription.StatusDisabled, subscription.ReasonGone, now)
			h.PausedUntil, h.Cooloff = nil, 0
			return []string{changeDisabled}
		})
	case r.err == nil:
		s.mu.Lock()
		s.run = 0
		s.mu.Unlock()
		if e.Health.FailingSince != nil || e.Subscription.Status == subscription.StatusPaused {
			s.change(ctx, "a delivery succeeded", func(sub *subscription.Subscription, h *registry.Health, now time.Time) []string {
				return heal(sub, h, now)
			})
		}
	case breakerFailure(r):
		s.mu.Lock()
		if s.run == 0 {
			s.since = now
		}
		s.run++
		run, since := s.run, s.since
		s.mu.Unlock()
		if run < s.f.set.Breaker.Failures && !halfOpen(e, now) {
			return
		}
		opened := s.change(ctx, fmt.Sprintf("%d failures in a row", run), func(sub *subscription.Subscription, h *registry.Health, now time.Time) []string {
			return s.f.set.Breaker.trip(sub, h, run, since, now)
		})
		if opened {
			s.mu.Lock()
			s.run = 0
			s.mu.Unlock()
		}
	}
}

// change applies fn to the subscription's stored status and health, and
// announces what changed. It reports whether anything did.
func (s *subscriber) change(ctx context.Context, why string, fn func(*subscription.Subscription, *registry.Health, time.Time) []string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	var changes []string
	e, changed, err := s.f.reg.ChangeHealth(ctx, s.id, func(sub *subscription.Subscription, h *registry.Health, now time.Time) bool {
		changes = fn(sub, h, now)
		return len(changes) > 0
	})
	if err != nil {
		if !errors.Is(err, registry.ErrNotFound) {
			s.log.Warn("could not store the subscription's health; the next attempt tries again", "error", err, "why", why)
		}
		return false
	}
	if !changed {
		return false
	}
	s.update(&e)
	for _, c := range changes {
		s.f.announce(c, e, why)
	}
	return true
}
