package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/tracing"
)

// HeaderCreatedAt carries the order's creation time on its event message,
// so that the stream alone can answer GET /orders/{id}: the event's own
// timestamp is when it was published, which for a resumed order is later.
// Headers are not the body, which stays the webhook body byte for byte.
const HeaderCreatedAt = "Jethook-Order-Created-At"

// MaxInFlight bounds the asynchronous publishes awaiting their PubAck, per
// kind (events, order records). A request past the bound waits briefly
// for a slot, then fails as unavailable, so a stalled NATS cannot pile up
// memory.
const MaxInFlight = 4096

// JetStream implements order.Store, order.EventPublisher and
// order.EventFinder on the ORDERS stream and the orders buckets.
type JetStream struct {
	nc     *nats.Conn
	events jetstream.JetStream // async publishes of events and keys, each awaited by its request
	record jetstream.JetStream // async writes of order records, awaited by no one
	orders jetstream.KeyValue
	keys   jetstream.KeyValue
	stream jetstream.Stream
	logger *slog.Logger
}

var (
	_ order.Store          = (*JetStream)(nil)
	_ order.EventPublisher = (*JetStream)(nil)
	_ order.EventFinder    = (*JetStream)(nil)
)

// New wraps the provisioned stream and buckets. timeout bounds the wait
// for each asynchronous PubAck; a failed record write is logged to logger.
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, orders, keys jetstream.KeyValue, timeout time.Duration, logger *slog.Logger) (*JetStream, error) {
	stream, err := js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", natsx.StreamOrders, err)
	}
	events, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(MaxInFlight), jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		return nil, err
	}
	record, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(MaxInFlight), jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			// The order is paid and its event stored; GET repairs the
			// record from the stream.
			logger.Warn("order record not written; GET /orders/{id} will repair it from the stream",
				"order_id", strings.TrimPrefix(m.Subject, recordPrefix), "error", err)
		}))
	if err != nil {
		return nil, err
	}
	return &JetStream{nc: nc, events: events, record: record, orders: orders, keys: keys, stream: stream, logger: logger}, nil
}

// recordPrefix and keyPrefix are the subject prefixes of the orders and
// idempotency buckets' keys, as nats.go's KeyValue publishes them (the KV
// subject layout of ADR-8).
const (
	recordPrefix = "$KV." + natsx.BucketOrders + "."
	keyPrefix    = "$KV." + natsx.BucketOrdersIdempotency + "."
)

// unavailable marks a failed NATS operation as retryable: whatever the
// cause (outage, timeout, a stream being recreated), the client should retry
// with the same Idempotency-Key, so the API answers 503 rather than 500.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", order.ErrUnavailable, err)
}

func (s *JetStream) connected() error {
	if !s.nc.IsConnected() {
		return fmt.Errorf("%w: not connected to NATS", order.ErrUnavailable)
	}
	return nil
}

// PublishOrderPaid publishes e to orders.paid.<order_id> with Nats-Msg-Id =
// event id and waits for the PubAck. It also expects the subject to be
// empty, so that the event of an order already in the stream, even past
// the duplicate window, is not stored twice; stored is false then.
func (s *JetStream) PublishOrderPaid(ctx context.Context, e event.OrderPaid, createdAt time.Time) (stored bool, err error) {
	if err := s.connected(); err != nil {
		return false, err
	}
	body, err := e.Marshal()
	if err != nil {
		return false, err
	}
	msg := &nats.Msg{Subject: event.Subject(e.Data.OrderID), Data: body, Header: nats.Header{}}
	msg.Header.Set(HeaderCreatedAt, createdAt.UTC().Format(time.RFC3339))
	// The event carries the request's trace to whoever delivers it.
	ctx, span := tracing.StartPublish(ctx, natsx.StreamOrders, msg, e.ID, e.ID, e.Data.OrderID)
	defer func() { tracing.End(span, err) }()
	ack, err := s.publish(ctx, msg,
		jetstream.WithMsgID(e.ID),
		jetstream.WithExpectStream(natsx.StreamOrders),
		jetstream.WithExpectLastSequencePerSubject(0))
	switch {
	case err == nil:
		return !ack.Duplicate, nil
	case wrongLastSequence(err):
		return false, nil
	}
	return false, unavailable(err)
}

// publish publishes msg asynchronously and waits for its PubAck, or for ctx
// to end: the request's own wait, without a synchronous request of its own
// per call.
func (s *JetStream) publish(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	paf, err := s.events.PublishMsgAsync(msg, opts...)
	if err != nil {
		return nil, err
	}
	select {
	case ack := <-paf.Ok():
		return ack, nil
	case err := <-paf.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wrongLastSequence reports the answer to a publish whose subject was not
// empty; a replicated stream reports it with its own code.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// FindEvent reads the order from its event in the ORDERS stream.
func (s *JetStream) FindEvent(ctx context.Context, orderID string) (order.Order, error) {
	if err := s.connected(); err != nil {
		return order.Order{}, err
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, event.Subject(orderID))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return order.Order{}, order.ErrNotFound
	case err != nil:
		return order.Order{}, unavailable(err)
	}
	e, err := event.Decode(msg.Data)
	if err != nil {
		return order.Order{}, fmt.Errorf("event of order %s: %w", orderID, err)
	}
	createdAt := e.Timestamp
	if h := msg.Header.Get(HeaderCreatedAt); h != "" {
		if err := createdAt.UnmarshalText([]byte(h)); err != nil {
			return order.Order{}, fmt.Errorf("event of order %s: %s: %w", orderID, HeaderCreatedAt, err)
		}
	}
	return order.FromEvent(e, createdAt), nil
}

// Get reads an order's record.
func (s *JetStream) Get(ctx context.Context, orderID string) (order.Order, error) {
	if err := s.connected(); err != nil {
		return order.Order{}, err
	}
	entry, err := s.orders.Get(ctx, orderID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return order.Order{}, order.ErrNotFound
	}
	if err != nil {
		return order.Order{}, unavailable(err)
	}
	var o order.Order
	if err := json.Unmarshal(entry.Value(), &o); err != nil {
		return order.Order{}, fmt.Errorf("decode order %s: %w", orderID, err)
	}
	return o, nil
}

// Put writes an order's record and waits for it to be stored.
func (s *JetStream) Put(ctx context.Context, o order.Order) error {
	if err := s.connected(); err != nil {
		return err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	_, err = s.orders.Put(ctx, o.OrderID, b)
	return unavailable(err)
}

// Record writes an order's record without waiting for it; a failure is
// logged, and GET repairs the record from the stream.
func (s *JetStream) Record(o order.Order) {
	b, err := o.AppendJSON(make([]byte, 0, 512))
	if err == nil {
		_, err = s.record.PublishMsgAsync(&nats.Msg{Subject: recordPrefix + o.OrderID, Data: b}, jetstream.WithStallWait(time.Millisecond))
	}
	if err != nil {
		s.logger.Warn("order record not written; GET /orders/{id} will repair it from the stream", "order_id", o.OrderID, "error", err)
	}
}

// keyRecord is what an idempotency key is bound to: the ids fixed at
// creation and the request's fingerprint.
type keyRecord struct {
	OrderID     string `json:"order_id"`
	EventID     string `json:"event_id"`
	CreatedAt   string `json:"created_at"`
	Fingerprint string `json:"fingerprint"`
}

// ClaimKey binds key to o with what KeyValue.Create does, in one awaited
// asynchronous publish: a write of the key that expects it absent, which
// succeeds for exactly one of several concurrent requests. Create's
// second step, writing over a key's delete marker, is not needed: keys are
// never deleted, and the bucket's TTL removes them without a marker.
func (s *JetStream) ClaimKey(ctx context.Context, key string, o order.Order) (order.Order, bool, error) {
	if err := s.connected(); err != nil {
		return order.Order{}, false, err
	}
	rec := keyRecord{OrderID: o.OrderID, EventID: o.EventID, CreatedAt: o.CreatedAt.Format(time.RFC3339), Fingerprint: o.Fingerprint}
	b, err := json.Marshal(rec)
	if err != nil {
		return order.Order{}, false, err
	}
	_, err = s.publish(ctx, &nats.Msg{Subject: keyPrefix + key, Data: b}, jetstream.WithExpectLastSequencePerSubject(0))
	if err == nil {
		return o, true, nil
	}
	if !wrongLastSequence(err) {
		return order.Order{}, false, unavailable(err)
	}
	entry, err := s.keys.Get(ctx, key)
	if err != nil {
		return order.Order{}, false, unavailable(err)
	}
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return order.Order{}, false, fmt.Errorf("decode idempotency record: %w", err)
	}
	bound := order.Order{OrderID: rec.OrderID, EventID: rec.EventID, Fingerprint: rec.Fingerprint}
	if err := bound.CreatedAt.UnmarshalText([]byte(rec.CreatedAt)); err != nil {
		return order.Order{}, false, fmt.Errorf("decode idempotency record: %w", err)
	}
	return bound, false, nil
}
