package order

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/jethook/jethook/shared/event"
)

// Errors that decide the HTTP answer.
var (
	ErrNotFound = errors.New("order not found")
	// ErrKeyReused means an Idempotency-Key came back with another body.
	ErrKeyReused = errors.New("idempotency key already used for a different request")
	// ErrUnavailable means NATS could not be reached in time; nothing the
	// client sees as done has happened, and a retry is safe.
	ErrUnavailable = errors.New("event store unavailable")
)

// EventPublisher puts an event durably into the ORDERS stream: it returns
// only after JetStream's PubAck, deduplicating by event id.
type EventPublisher interface {
	PublishOrderPaid(ctx context.Context, e event.OrderPaid) error
}

// Store keeps orders and the idempotency keys that point at them.
type Store interface {
	Get(ctx context.Context, orderID string) (Order, error)
	Put(ctx context.Context, o Order) error
	// ClaimKey binds key to o atomically. If the key is already bound, it
	// returns the bound order (possibly only its ids and fingerprint, when a
	// crash came before the order was first stored) and claimed=false.
	ClaimKey(ctx context.Context, key string, o Order) (bound Order, claimed bool, err error)
}

// EventFinder tells whether an order's event is already in the ORDERS
// stream, so that a record left pending by a crash after the PubAck can be
// put right.
type EventFinder interface {
	HasEvent(ctx context.Context, orderID string) (bool, error)
}

// Payer takes the payment for an order. It must be idempotent by order id:
// a resumed order is charged again with the same id.
type Payer interface {
	Charge(ctx context.Context, orderID string, amountMinor int64, currency string) error
}

// SimulatedPayer accepts every payment; it stands in for a payment provider.
type SimulatedPayer struct{}

// Charge accepts the payment.
func (SimulatedPayer) Charge(context.Context, string, int64, string) error { return nil }

var _ Payer = SimulatedPayer{}

// Service creates and reads orders.
type Service struct {
	Store     Store
	Publisher EventPublisher
	Payer     Payer
	// Events, when set, lets Get repair a pending record whose event was
	// published before a crash.
	Events EventFinder
	Logger *slog.Logger
	Now    func() time.Time
}

// Create turns a valid request into a paid order whose event is durably in
// ORDERS. With an idempotency key, a retry returns the first order (resuming
// it if a crash left it pending) and replayed=true; it never publishes a
// second, different event.
func (s *Service) Create(ctx context.Context, req Request, idempotencyKey string) (o Order, replayed bool, err error) {
	o, err = s.newOrder(req)
	if err != nil {
		return Order{}, false, err
	}
	if idempotencyKey != "" {
		bound, claimed, err := s.Store.ClaimKey(ctx, hashKey(idempotencyKey), o)
		if err != nil {
			return Order{}, false, err
		}
		if !claimed {
			if bound.Fingerprint != o.Fingerprint {
				return Order{}, false, ErrKeyReused
			}
			stored, err := s.Store.Get(ctx, bound.OrderID)
			switch {
			case err == nil && stored.Status == StatusPaid:
				return stored, true, nil
			case err == nil:
				o = stored
			case errors.Is(err, ErrNotFound):
				// The first attempt died between binding the key and storing
				// the order: rebuild it from the ids the key holds.
				o.OrderID, o.EventID, o.CreatedAt = bound.OrderID, bound.EventID, bound.CreatedAt
			default:
				return Order{}, false, err
			}
			replayed = true
			s.Logger.Info("resuming order for a retried idempotency key", "order_id", o.OrderID, "event_id", o.EventID)
		}
	}
	if o, err = s.complete(ctx, o); err != nil {
		return Order{}, false, err
	}
	return o, replayed, nil
}

// complete runs the steps after the ids are fixed. Each is safe to repeat:
// the payment is idempotent by order id, the publish is deduplicated by
// event id, and the writes are overwrites.
func (s *Service) complete(ctx context.Context, o Order) (Order, error) {
	o.Status = StatusPending
	if err := s.Store.Put(ctx, o); err != nil {
		return Order{}, fmt.Errorf("store pending order: %w", err)
	}
	if err := s.Payer.Charge(ctx, o.OrderID, o.AmountMinor, o.Currency); err != nil {
		return Order{}, fmt.Errorf("charge: %w", err)
	}
	if err := s.Publisher.PublishOrderPaid(ctx, o.Event(s.now())); err != nil {
		return Order{}, fmt.Errorf("publish order.paid: %w", err)
	}
	o.Status = StatusPaid
	// From the PubAck on, the order is paid and its email is on its way:
	// the client must hear 201, not a 503 that invites a second order. The
	// record gets its own short budget, since the request's may be spent;
	// if the write still fails, GET /orders/{id} repairs the record from
	// the stream.
	putCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.Store.Put(putCtx, o); err != nil {
		s.Logger.Warn("order paid but its record still says pending", "order_id", o.OrderID, "event_id", o.EventID, "error", err)
	}
	return o, nil
}

// recordTimeout bounds the write of a paid order's record after the PubAck.
const recordTimeout = 2 * time.Second

// Get returns a stored order.
func (s *Service) Get(ctx context.Context, orderID string) (Order, error) {
	if !event.ValidOrderID(orderID) {
		return Order{}, ErrNotFound
	}
	o, err := s.Store.Get(ctx, orderID)
	if err != nil || o.Status != StatusPending || s.Events == nil {
		return o, err
	}
	// A pending record whose event is in the stream is a paid order whose
	// process died between the PubAck and the last write: its email is on
	// its way, so the record says so from now on.
	published, err := s.Events.HasEvent(ctx, orderID)
	if err != nil || !published {
		return o, err
	}
	o.Status = StatusPaid
	if err := s.Store.Put(ctx, o); err != nil {
		return Order{}, fmt.Errorf("store repaired order: %w", err)
	}
	s.Logger.Info("pending order found published; marked paid", "order_id", o.OrderID, "event_id", o.EventID)
	return o, nil
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) newOrder(req Request) (Order, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Order{}, fmt.Errorf("order id: %w", err)
	}
	eventID, err := event.NewID()
	if err != nil {
		return Order{}, err
	}
	return Order{
		OrderID:       id.String(),
		Status:        StatusPending,
		EventID:       eventID,
		CustomerEmail: req.CustomerEmail,
		ProductName:   req.ProductName,
		Quantity:      req.Quantity,
		AmountMinor:   req.AmountMinor,
		Currency:      req.Currency,
		CreatedAt:     s.now().UTC().Truncate(time.Second),
		Fingerprint:   req.Fingerprint(),
	}, nil
}

// hashKey turns a client's Idempotency-Key into a fixed-size KV key, so any
// bytes the client sends are safe and never stored as they are.
func hashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}
