package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
)

// JetStream implements order.Store and order.EventPublisher.
type JetStream struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	orders jetstream.KeyValue
	keys   jetstream.KeyValue
}

var (
	_ order.Store          = (*JetStream)(nil)
	_ order.EventPublisher = (*JetStream)(nil)
	_ order.EventFinder    = (*JetStream)(nil)
)

// New wraps the provisioned buckets.
func New(nc *nats.Conn, js jetstream.JetStream, orders, keys jetstream.KeyValue) *JetStream {
	return &JetStream{nc: nc, js: js, orders: orders, keys: keys}
}

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
// event id and waits for the PubAck. It also expects the subject to be empty,
// so that a resumed order whose event is already stored, even past the
// duplicate window, is not published twice.
func (s *JetStream) PublishOrderPaid(ctx context.Context, e event.OrderPaid) error {
	if err := s.connected(); err != nil {
		return err
	}
	body, err := e.Marshal()
	if err != nil {
		return err
	}
	_, err = s.js.Publish(ctx, event.Subject(e.Data.OrderID), body,
		jetstream.WithMsgID(e.ID),
		jetstream.WithExpectStream(natsx.StreamOrders),
		jetstream.WithExpectLastSequencePerSubject(0))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return nil
	}
	return unavailable(err)
}

// HasEvent reports whether the ORDERS stream holds the order's event.
func (s *JetStream) HasEvent(ctx context.Context, orderID string) (bool, error) {
	if err := s.connected(); err != nil {
		return false, err
	}
	stream, err := s.js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		return false, unavailable(err)
	}
	_, err = stream.GetLastMsgForSubject(ctx, event.Subject(orderID))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, unavailable(err)
	}
	return true, nil
}

// Get reads an order.
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

// Put writes an order.
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

// keyRecord is what an idempotency key is bound to: the ids fixed at
// creation and the request's fingerprint.
type keyRecord struct {
	OrderID     string `json:"order_id"`
	EventID     string `json:"event_id"`
	CreatedAt   string `json:"created_at"`
	Fingerprint string `json:"fingerprint"`
}

// ClaimKey binds key to o with a KV Create, which succeeds for exactly one
// of several concurrent requests.
func (s *JetStream) ClaimKey(ctx context.Context, key string, o order.Order) (order.Order, bool, error) {
	if err := s.connected(); err != nil {
		return order.Order{}, false, err
	}
	rec := keyRecord{OrderID: o.OrderID, EventID: o.EventID, CreatedAt: o.CreatedAt.Format("2006-01-02T15:04:05Z07:00"), Fingerprint: o.Fingerprint}
	b, err := json.Marshal(rec)
	if err != nil {
		return order.Order{}, false, err
	}
	_, err = s.keys.Create(ctx, key, b)
	if err == nil {
		return o, true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
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
