package deliver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// FilterSubject selects the events the dispatcher turns into webhooks.
const FilterSubject = "orders.paid.>"

// DefaultAckWaitMargin is added to the HTTP timeout for the consumer's
// AckWait, so that the server never redelivers a message whose attempt is
// still running: the margin covers the double ack or the dead-letter
// publish. AckWait counts from the moment a worker takes the message (see
// handle), not from when the pull buffered it.
const DefaultAckWaitMargin = 5 * time.Second

// maxAckPending is the consumer's MaxAckPending. It is large on purpose:
// an event waiting out a NakWithDelay counts as ack-pending on the server,
// so a limit near the concurrency would let a handful of failing events
// (after a receiver outage, every event of the outage) stop all new
// deliveries until their delays expire. The pull still fetches only
// Concurrency messages at a time, so this does not widen what one process
// holds; it only bounds how many events may wait out a retry at once.
const maxAckPending = 10_000

// DefaultShutdownGrace is how long in-flight attempts may run on after the
// context ends before they are cancelled and redelivered later.
const DefaultShutdownGrace = 5 * time.Second

// restartWait is the pause before pulling again after the message
// iterator stopped on its own, for instance because the consumer was
// deleted.
const restartWait = time.Second

// Settings are the dispatcher's delivery settings.
type Settings struct {
	URL         string           // the receiver's endpoint
	Secrets     []webhook.Secret // signing secrets, several during rotation
	RetryBase   time.Duration    // first backoff step
	RetryMax    time.Duration    // backoff cap, also for Retry-After
	MaxDeliver  int              // attempts before dead-lettering
	HTTPTimeout time.Duration    // one whole attempt
	Concurrency int              // attempts in flight at most
	Replicas    int              // of the streams it provisions
	// ShutdownGrace bounds how long Run waits for in-flight attempts after
	// its context ends; zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// AckWaitMargin is added to HTTPTimeout for the consumer's AckWait;
	// zero means DefaultAckWaitMargin. Only tests set it, to make AckWait
	// short.
	AckWaitMargin time.Duration
}

// Dispatcher delivers the ORDERS events to one webhook receiver.
type Dispatcher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	set     Settings
	log     *slog.Logger
	client  *http.Client
	metrics *Metrics
}

// New returns a Dispatcher; client should come from NewHTTPClient, and m
// from NewMetrics (nil records nothing).
func New(nc *nats.Conn, js jetstream.JetStream, set Settings, logger *slog.Logger, client *http.Client, m *Metrics) *Dispatcher {
	if set.ShutdownGrace <= 0 {
		set.ShutdownGrace = DefaultShutdownGrace
	}
	set.Concurrency = max(set.Concurrency, 1)
	return &Dispatcher{nc: nc, js: js, set: set, log: logger, client: client, metrics: m}
}

// ConsumerConfig is the durable "dispatcher" consumer on ORDERS. It has no
// BackOff list, because the dispatcher sets every delay itself with
// NakWithDelay and the two would add up. MaxDeliver is unlimited: the
// dispatcher counts the attempts itself (NumDelivered) and dead-letters an
// event after MAX_DELIVER of them, or without an attempt when it arrives
// past MAX_DELIVER because earlier attempts died with the process. The
// server never gives up on an event on its own, which would drop it with no
// more than an advisory: a dead-letter copy that fails is retried on the
// next delivery until DEADLETTER accepts it.
func ConsumerConfig(set Settings) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       natsx.ConsumerDispatcher,
		Description:   "signs and posts order events to the webhook receiver",
		FilterSubject: FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       set.HTTPTimeout + cmp.Or(set.AckWaitMargin, DefaultAckWaitMargin),
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
}

// Provision creates or updates the ORDERS and DEADLETTER streams and the
// dispatcher consumer. It is idempotent.
func (d *Dispatcher) Provision(ctx context.Context) (jetstream.Consumer, error) {
	streams := []jetstream.StreamConfig{natsx.OrdersStream(d.set.Replicas), natsx.DeadletterStream(d.set.Replicas)}
	if err := natsx.Provision(ctx, d.js, streams, nil); err != nil {
		return nil, err
	}
	cons, err := d.js.CreateOrUpdateConsumer(ctx, natsx.StreamOrders, ConsumerConfig(d.set))
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s on %s: %w", natsx.ConsumerDispatcher, natsx.StreamOrders, err)
	}
	return cons, nil
}

// Ready reports why the dispatcher cannot deliver, or nil: NATS is
// connected and the streams and the consumer exist.
func (d *Dispatcher) Ready(ctx context.Context) error {
	return natsx.Check(ctx, d.nc, d.js, natsx.Requirement{
		Streams:   []string{natsx.StreamOrders, natsx.StreamDeadletter},
		Consumers: [][2]string{{natsx.StreamOrders, natsx.ConsumerDispatcher}},
	})
}

// Run provisions what it needs, retrying while NATS is away, and delivers
// events until ctx ends. Then it stops pulling, lets in-flight attempts
// finish and settles them (cancelling those still running after the
// shutdown grace), and returns nil. It returns an error only when the NATS
// connection was closed under it.
func (d *Dispatcher) Run(ctx context.Context) error {
	// Attempts run on a context of their own: the end of ctx stops the
	// pulling, while in-flight attempts get the shutdown grace.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	settle := context.WithoutCancel(ctx)

	for {
		var cons jetstream.Consumer
		err := natsx.Retry(ctx, d.log, "provision dispatcher", func(ctx context.Context) error {
			var err error
			cons, err = d.Provision(ctx)
			return err
		})
		if err != nil {
			return nil // ctx ended before NATS was ready.
		}
		d.log.Info("dispatching", "stream", natsx.StreamOrders, "consumer", natsx.ConsumerDispatcher,
			"concurrency", d.set.Concurrency, "max_deliver", d.set.MaxDeliver)

		err = d.consume(ctx, work, settle, cancelWork, cons)
		switch {
		case ctx.Err() != nil:
			return nil
		case d.nc.IsClosed():
			return fmt.Errorf("dispatching stopped: %w", err)
		}
		d.log.Warn("pulling stopped, starting again", "error", err.Error(), "retry_in", restartWait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(restartWait):
		}
	}
}

// consume runs the workers on one message iterator until ctx ends or the
// iterator stops. The iterator keeps at most Concurrency messages buffered,
// so that a message waits in this process only as long as a worker needs
// to become free; handle restarts its AckWait when a worker takes it.
func (d *Dispatcher) consume(ctx, work, settle context.Context, cancelWork context.CancelFunc, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(d.set.Concurrency), natsx.PullExpiry)
	if err != nil {
		return fmt.Errorf("start pulling: %w", err)
	}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr = errors.New("message iterator closed")
	)
	for range d.set.Concurrency {
		wg.Go(func() {
			for {
				msg, err := it.Next()
				if err != nil {
					// Every error of Next ends the iterator; stopping it
					// releases the other workers too.
					if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						errOnce.Do(func() { firstErr = err })
					}
					it.Stop()
					return
				}
				d.handle(work, settle, msg)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	select {
	case <-done:
		return firstErr
	case <-ctx.Done():
	}
	// Stop discards the buffered messages that no worker has started; the
	// server redelivers them after AckWait, which keeps shutdown bounded by
	// one attempt instead of two.
	it.Stop()
	grace := time.NewTimer(d.set.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		d.log.Warn("in-flight webhooks still running at shutdown, cancelling them", "grace", d.set.ShutdownGrace.String())
		cancelWork()
		<-done
	}
	return nil
}
