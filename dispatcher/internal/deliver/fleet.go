package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/platform"
	"github.com/jethook/jethook/dispatcher/internal/redeliver"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
)

// Settings are the dispatcher's delivery settings, the same for every
// subscription.
type Settings struct {
	RetryBase   time.Duration // first backoff step
	RetryMax    time.Duration // backoff cap, also for Retry-After
	MaxDeliver  int           // attempts before dead-lettering
	HTTPTimeout time.Duration // one whole attempt
	Replicas    int           // of the streams it provisions
	// RedeliverConcurrency is how many replays and recoveries are in
	// flight at once, for all subscriptions.
	RedeliverConcurrency int
	// AttemptLogMaxAge is how long DELIVERY_ATTEMPTS keeps an attempt.
	AttemptLogMaxAge time.Duration
	Breaker          BreakerSettings
	// Timings are the consumers' clocks, derived and validated by the
	// dispatcher's configuration.
	Timings consume.Timings
}

// Registry is what delivery needs of the subscription registry.
type Registry interface {
	Watch(ctx context.Context, fn func(registry.Change)) error
	ChangeHealth(ctx context.Context, id string, fn func(s *subscription.Subscription, h *registry.Health, now time.Time) bool) (registry.Entry, bool, error)
	SetStatus(ctx context.Context, id string, ifRevision uint64, status subscription.Status, reason subscription.Reason) (registry.Entry, bool, error)
}

// JobProgress is told of every redelivery of a recovery job that was
// delivered, so that the job can count its progress.
type JobProgress interface {
	Delivered(jobID string)
}

// maxAckPending is a consumer's MaxAckPending: none (-1). An event
// waiting out a NakWithDelay counts as ack-pending on the server, so any
// limit is a number of failing events (a receiver that fails some of
// them for hours, every event of an outage) past which all new
// deliveries stop until their delays expire. The runtime pulls only as
// many events as it has free workers, so no limit here does not widen
// what one process holds.
const maxAckPending = -1

// Fleet delivers every subscription's events: it watches the registry and
// runs, on the shared consumer runtime, one consumer on ORDERS per
// subscription (wh-<id>), each with its own concurrency, rate limit,
// retries and circuit breaker, so that a dead or slow endpoint never
// delays another's deliveries; and the one redeliver consumer on
// REDELIVERIES, for replays and recoveries. Every dispatcher replica runs
// the same fleet; the replicas share the consumers.
type Fleet struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	reg      Registry
	set      Settings
	log      *slog.Logger
	client   *http.Client
	metrics  *Metrics
	attempts *attempt.Log
	// Jobs, when set, counts the delivered redeliveries of recovery jobs.
	Jobs JobProgress
	now  func() time.Time

	mu     sync.Mutex
	ctx    context.Context // of Run, for the subscribers it starts
	subs   map[string]*subscriber
	seen   map[string]bool // reported since the watch last restarted
	wg     sync.WaitGroup
	synced atomic.Bool
	// provisioned is set once the streams exist.
	provisioned atomic.Bool
}

// New returns a Fleet. client must dial through the SSRF guard and never
// follow redirects; m may be nil.
func New(nc *nats.Conn, js jetstream.JetStream, reg Registry, set Settings, logger *slog.Logger, client *http.Client, m *Metrics) *Fleet {
	set.RedeliverConcurrency = max(set.RedeliverConcurrency, 1)
	if set.AttemptLogMaxAge <= 0 {
		set.AttemptLogMaxAge = natsx.DefaultAttemptLogMaxAge
	}
	return &Fleet{
		nc: nc, js: js, reg: reg, set: set, log: logger, client: client, metrics: m,
		attempts: attempt.NewLog(js, logger), now: time.Now,
		subs: map[string]*subscriber{}, seen: map[string]bool{},
	}
}

func (f *Fleet) policy() policy {
	return policy{retryBase: f.set.RetryBase, retryMax: f.set.RetryMax, maxDeliver: f.set.MaxDeliver}
}

// streams are the streams delivery needs of its own; the platform's come
// from platform.Objects.
func (f *Fleet) streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{natsx.OrdersStream(f.set.Replicas), natsx.DeadletterStream(f.set.Replicas)}
}

// Provision creates or updates the streams delivery needs and those of the
// platform (the attempt log, the redelivery queue, OPS, the jobs bucket).
// It is idempotent, and safe from every replica at once.
func (f *Fleet) Provision(ctx context.Context) error {
	if !f.nc.IsConnected() {
		return natsx.ErrNotConnected
	}
	if err := natsx.Provision(ctx, f.js, f.streams(), nil); err != nil {
		return err
	}
	if err := platform.Provision(ctx, f.js, f.set.Replicas, f.set.AttemptLogMaxAge); err != nil {
		return err
	}
	f.provisioned.Store(true)
	return nil
}

// Ready reports why the dispatcher cannot deliver, or nil: NATS is
// connected, the streams exist, the registry has been read, and every
// subscription that delivers has its consumer.
func (f *Fleet) Ready(ctx context.Context) error {
	req := platform.Requirement()
	for _, s := range f.streams() {
		req.Streams = append(req.Streams, s.Name)
	}
	req.Consumers = append(req.Consumers, [2]string{natsx.StreamRedeliveries, natsx.ConsumerRedeliver})
	req.Buckets = append(req.Buckets, natsx.BucketSubscriptions)
	err := natsx.Check(ctx, f.nc, f.js, req)
	if err != nil {
		return err
	}
	if !f.synced.Load() {
		return errors.New("the subscriptions have not been read yet")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, s := range f.subs {
		if s.delivering() && !s.ready.Load() {
			return fmt.Errorf("consumer %s of subscription %s not provisioned yet", natsx.SubscriptionConsumer(id), id)
		}
	}
	return nil
}

// Run provisions the streams, retrying while NATS is away, and delivers
// until ctx ends: it follows the registry, starting, changing and stopping
// each subscription's consumer as the subscription changes, and runs the
// redeliver consumer. Then every consumer stops as consume.Runner.Run
// describes, and Run returns nil; it returns an error only when the NATS
// connection was closed under it.
func (f *Fleet) Run(ctx context.Context) error {
	if err := natsx.Retry(ctx, f.log, "provision delivery streams", f.Provision); err != nil {
		return nil // ctx ended before NATS was ready.
	}
	f.mu.Lock()
	f.ctx = ctx
	f.mu.Unlock()
	redeliveries, err := consume.New(consume.Config{
		Stream:      natsx.StreamRedeliveries,
		Name:        natsx.ConsumerRedeliver,
		Noun:        "webhook",
		Concurrency: f.set.RedeliverConcurrency,
		Timings:     f.set.Timings,
		Handle:      f.handleRedelivery,
		Provision:   f.provisionRedeliver,
		JS:          f.js,
		Logger:      f.log.With("source", "redelivery"),
		Observe:     func(st consume.Settled) { f.observe(st.Decision.Owner, st) },
	})
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	errs := make(chan error, 2)
	go func() { errs <- redeliveries.Run(ctx) }()
	go func() { errs <- f.reg.Watch(ctx, f.apply) }()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	f.wg.Wait()
	return first
}

// apply follows one change of the registry. It runs on the watch's
// goroutine and returns at once: each subscriber acts on its own.
func (f *Fleet) apply(c registry.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c.Op {
	case registry.Restarted:
		clear(f.seen)
	case registry.Put:
		f.seen[c.ID] = true
		e := c.Entry
		if s, ok := f.subs[c.ID]; ok {
			s.update(&e)
			return
		}
		s := newSubscriber(f, &e)
		f.subs[c.ID] = s
		f.wg.Go(func() { s.loop(f.ctx) })
	case registry.Deleted:
		f.remove(c.ID)
	case registry.Synced:
		for id := range f.subs {
			if !f.seen[id] {
				f.remove(id)
			}
		}
		if !f.synced.Swap(true) {
			f.wg.Go(func() { f.collectOrphans(f.ctx) })
		}
	}
}

// remove stops subscription id's consumer for good and deletes it;
// f.mu is held.
func (f *Fleet) remove(id string) {
	s, ok := f.subs[id]
	if !ok {
		return
	}
	delete(f.subs, id)
	s.remove()
}

func (f *Fleet) subscriber(id string) *subscriber {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs[id]
}

// collectOrphans deletes the consumers of subscriptions that were deleted
// while no dispatcher ran to see it.
func (f *Fleet) collectOrphans(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := f.js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		return
	}
	names := s.ConsumerNames(ctx)
	var orphans []string
	for name := range names.Name() {
		id, ok := strings.CutPrefix(name, natsx.SubscriptionConsumerPrefix)
		if ok && f.subscriber(id) == nil {
			orphans = append(orphans, name)
		}
	}
	for _, name := range orphans {
		// A subscription created since the listing has its consumer
		// back at its next provisioning.
		if id := strings.TrimPrefix(name, natsx.SubscriptionConsumerPrefix); f.subscriber(id) != nil {
			continue
		}
		if err := f.js.DeleteConsumer(ctx, natsx.StreamOrders, name); err == nil {
			f.log.Info("consumer of a deleted subscription removed", "consumer", name)
		}
	}
}

// provisionRedeliver creates the redeliver consumer on REDELIVERIES, a
// work queue: it starts from what the queue holds.
func (f *Fleet) provisionRedeliver(ctx context.Context, _ uint64) (jetstream.Consumer, error) {
	if err := f.Provision(ctx); err != nil {
		return nil, err
	}
	return consume.EnsureConsumer(ctx, f.js, natsx.StreamRedeliveries, jetstream.ConsumerConfig{
		Durable:       natsx.ConsumerRedeliver,
		Description:   "delivers replayed dead letters and recovered events to their subscription",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       f.set.Timings.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}, 0)
}

// handleRedelivery delivers a replayed or recovered event to the one
// subscription its subject names, with the same decisions as that
// subscription's own consumer.
func (f *Fleet) handleRedelivery(ctx context.Context, m *consume.Msg) consume.Decision {
	subID, eventID, ok := redeliver.Parse(m.Subject())
	if !ok {
		return consume.DeadLetter(outcomeDeadLettered, reasonPermanent, fmt.Errorf("subject %q is not redeliver.<subscription>.<event>", m.Subject()))
	}
	s := f.subscriber(subID)
	if s == nil {
		// Nothing can receive it any more; its first dead letter, if it
		// was one, is still in DEADLETTER.
		d := consume.Ack("subscription_gone", slog.String("subscription_id", subID), slog.String("event_id", eventID))
		d.Message = "webhook dropped: its subscription no longer exists"
		return d
	}
	source := m.Headers().Get(redeliver.HeaderSource)
	if source != attempt.SourceRecover {
		source = attempt.SourceReplay
	}
	d := s.deliver(ctx, m, source)
	d.Owner = subID
	d.Attrs = append(d.Attrs, slog.String("subscription_id", subID))
	if job := m.Headers().Get(redeliver.HeaderJob); job != "" && d.Verdict == consume.VerdictAck && f.Jobs != nil {
		f.Jobs.Delivered(job)
	}
	return d
}

// observe counts a settled message of subscription subID.
func (f *Fleet) observe(subID string, s consume.Settled) {
	f.metrics.settled(subID, s)
	if s.Verdict == consume.VerdictDeadLetter {
		f.announceDeadLetter(subID, s)
	}
}
