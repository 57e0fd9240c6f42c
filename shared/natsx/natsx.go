package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the NATS objects, fixed by the design.
const (
	StreamOrders        = "ORDERS"
	StreamDeadletter    = "DEADLETTER"
	StreamNotifications = "NOTIFICATIONS"

	ConsumerEmail = "notifier-email"
	// ConsumerLegacyDispatcher is the single consumer on ORDERS of the
	// versions before subscriptions; sub_notifier's wh- consumer takes its
	// place and its position.
	ConsumerLegacyDispatcher = "dispatcher"

	BucketOrders            = "orders"
	BucketOrdersIdempotency = "orders_idempotency"
	BucketProcessed         = "notifier_processed"
	BucketSubscriptions     = "subscriptions"
)

// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values. The
// server keeps every id of the window in memory (rate × window), so it is
// short; the idempotency buckets are the long-term guarantee.
const DuplicateWindow = 2 * time.Minute

// OrdersStream is the durable event log of paid orders.
func OrdersStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamOrders,
		Description: "order events; body = webhook body",
		Subjects:    []string{"orders.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  DuplicateWindow,
		Replicas:    replicas,
	}
}

// DeadletterStream keeps what the dispatcher gave up on, with the reason in
// headers, for an operator to read and replay.
func DeadletterStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamDeadletter,
		Description: "what failed for good: webhooks and emails, with the reason in headers",
		Subjects:    []string{"deadletter.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Replicas:    replicas,
	}
}

// NotificationsStream is the notifier's durable hand-off queue between the
// webhook handler and the email worker.
func NotificationsStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamNotifications,
		Description: "accepted webhooks waiting for their email",
		Subjects:    []string{"notifications.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  DuplicateWindow,
		Replicas:    replicas,
	}
}

// OrdersBucket holds the current state of each order, key = order id.
func OrdersBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketOrders,
		Description: "current state of each order",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// OrdersIdempotencyBucket maps a hashed Idempotency-Key to its order for
// ttl, the time in which a client may retry a POST.
func OrdersIdempotencyBucket(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketOrdersIdempotency,
		Description: "Idempotency-Key (sha256) -> order id",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// ProcessedBucket is the notifier's idempotency store, key = event id.
// Records expire after ttl, which must outlast the dispatcher's longest
// retry span; a claim may carry a shorter per-key TTL, which needs the
// limit markers.
func ProcessedBucket(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         BucketProcessed,
		Description:    "event ids whose email was sent (or is being sent)",
		TTL:            ttl,
		LimitMarkerTTL: time.Minute,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
	}
}

// SubscriptionsBucket is the dispatcher's subscription registry, key =
// subscription id, value = its JSON with the secrets encrypted. It keeps no
// history: a rotated or deleted secret must not linger on disk in an older
// revision, and the revision alone is enough for optimistic concurrency.
func SubscriptionsBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketSubscriptions,
		Description: "webhook subscriptions; secrets encrypted",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// Provision creates or updates every stream and bucket given. It is safe to
// call from every service at every start.
func Provision(ctx context.Context, js jetstream.JetStream, streams []jetstream.StreamConfig, buckets []jetstream.KeyValueConfig) error {
	for _, cfg := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("provision stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range buckets {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("provision KV bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// Retry calls fn until it succeeds or ctx ends, waiting from 250 ms up to 5 s
// between attempts. Services use it to provision while NATS is still away.
func Retry(ctx context.Context, logger *slog.Logger, what string, fn func(context.Context) error) error {
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logger.Warn(what+" failed, retrying", "error", err, "attempt", attempt, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// Requirement names the NATS objects a service needs to be ready.
type Requirement struct {
	Streams   []string
	Consumers [][2]string // stream, consumer
	Buckets   []string
}

// ErrNotConnected means the client has no live connection to NATS.
var ErrNotConnected = errors.New("not connected to NATS")

// notConnected is ErrNotConnected with the reason of the last failed
// attempt, such as a TLS failure, when the client knows it.
func notConnected(nc *nats.Conn) error {
	if nc != nil {
		if err := nc.LastError(); err != nil {
			return fmt.Errorf("%w: %v", ErrNotConnected, err)
		}
	}
	return ErrNotConnected
}

// Check reports why the service is not ready, or nil: the connection is up
// and every required object exists.
func Check(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, req Requirement) error {
	if nc == nil || !nc.IsConnected() {
		return notConnected(nc)
	}
	for _, s := range req.Streams {
		if _, err := js.Stream(ctx, s); err != nil {
			return fmt.Errorf("stream %s: %w", s, err)
		}
	}
	for _, c := range req.Consumers {
		if _, err := js.Consumer(ctx, c[0], c[1]); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", c[1], c[0], err)
		}
	}
	for _, b := range req.Buckets {
		if _, err := js.KeyValue(ctx, b); err != nil {
			return fmt.Errorf("KV bucket %s: %w", b, err)
		}
	}
	return nil
}

// Drain lets in-flight messages on nc finish, then closes it; it waits until
// the connection is closed or ctx ends, and closes it hard in that case.
func Drain(ctx context.Context, nc *nats.Conn) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return nil
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("drain NATS connection: %w", ctx.Err())
	}
}
