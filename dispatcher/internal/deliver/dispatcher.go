package deliver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// FilterSubject selects the events the dispatcher turns into webhooks.
const FilterSubject = "orders.paid.>"

// maxAckPending is the consumer's MaxAckPending. It is large on purpose:
// an event waiting out a NakWithDelay counts as ack-pending on the server,
// so a limit near the concurrency would let a handful of failing events
// (after a receiver outage, every event of the outage) stop all new
// deliveries until their delays expire. The runtime still pulls only as
// many events as it has free workers, so this does not widen what one
// process holds; it only bounds how many events may wait out a retry at
// once.
const maxAckPending = 10_000

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
	// Timings are the consumer's clocks, derived and validated by the
	// dispatcher's configuration.
	Timings consume.Timings
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
	set.Concurrency = max(set.Concurrency, 1)
	return &Dispatcher{nc: nc, js: js, set: set, log: logger, client: client, metrics: m}
}

func (d *Dispatcher) policy() policy {
	return policy{retryBase: d.set.RetryBase, retryMax: d.set.RetryMax, maxDeliver: d.set.MaxDeliver}
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
		AckWait:       set.Timings.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
}

// Provision creates or updates the ORDERS and DEADLETTER streams and the
// dispatcher consumer. It is idempotent. A consumer that vanished while the
// dispatcher ran is created again from resume, where it stood.
func (d *Dispatcher) Provision(ctx context.Context, resume uint64) (jetstream.Consumer, error) {
	if !d.nc.IsConnected() {
		return nil, natsx.ErrNotConnected
	}
	streams := []jetstream.StreamConfig{natsx.OrdersStream(d.set.Replicas), natsx.DeadletterStream(d.set.Replicas)}
	if err := natsx.Provision(ctx, d.js, streams, nil); err != nil {
		return nil, err
	}
	return consume.EnsureConsumer(ctx, d.js, natsx.StreamOrders, ConsumerConfig(d.set), resume)
}

// Ready reports why the dispatcher cannot deliver, or nil: NATS is
// connected and the streams and the consumer exist.
func (d *Dispatcher) Ready(ctx context.Context) error {
	return natsx.Check(ctx, d.nc, d.js, natsx.Requirement{
		Streams:   []string{natsx.StreamOrders, natsx.StreamDeadletter},
		Consumers: [][2]string{{natsx.StreamOrders, natsx.ConsumerDispatcher}},
	})
}

// Run delivers events on the consumer runtime until ctx ends; see
// consume.Runner.Run.
func (d *Dispatcher) Run(ctx context.Context) error {
	r, err := consume.New(consume.Config{
		Stream:      natsx.StreamOrders,
		Name:        natsx.ConsumerDispatcher,
		Noun:        "webhook",
		Concurrency: d.set.Concurrency,
		Timings:     d.set.Timings,
		Handle:      d.Handle,
		Provision:   d.Provision,
		JS:          d.js,
		Logger:      d.log,
		Observe:     d.metrics.settled,
	})
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	d.log.Info("dispatching", "stream", natsx.StreamOrders, "consumer", natsx.ConsumerDispatcher,
		"concurrency", d.set.Concurrency, "max_deliver", d.set.MaxDeliver)
	return r.Run(ctx)
}
