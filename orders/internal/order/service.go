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
	// ErrKeyTooOld means an Idempotency-Key came back for an order that was
	// never confirmed, after the ORDERS stream may have forgotten whether
	// its event was stored: resuming it could send a second email.
	ErrKeyTooOld = errors.New("idempotency key's order was never confirmed and is too old to resume")
	// ErrUnavailable means NATS could not be reached in time; nothing the
	// client sees as done has happened, and a retry is safe.
	ErrUnavailable = errors.New("event store unavailable")
)

// EventPublisher puts an event durably into the ORDERS stream: it returns
// only after JetStream's PubAck. It never stores a second event for an
// order, also after JetStream's duplicate window: stored is false when the
// order's event was already in the stream.
type EventPublisher interface {
	PublishOrderPaid(ctx context.Context, e event.OrderPaid, createdAt time.Time) (stored bool, err error)
}

// Store keeps the records of orders and the idempotency keys that point
// at them. The record of a paid order outlives its event in the stream.
type Store interface {
	Get(ctx context.Context, orderID string) (Order, error)
	// Record writes o in the background: the event in the stream is what
	// a 201 promises, and a record lost on the way is repaired by Get.
	Record(o Order)
	// ClaimKey binds key to o atomically. If the key is already bound, it
	// returns the bound order (its ids, creation time and fingerprint)
	// and claimed=false.
	ClaimKey(ctx context.Context, key string, o Order) (bound Order, claimed bool, err error)
}

// EventFinder reads an order from its event in the ORDERS stream, so that
// an order whose record is missing (its write lost in a crash right after
// the PubAck) or left pending can be answered and put right. It returns
// ErrNotFound when the stream holds no event for the order.
type EventFinder interface {
	FindEvent(ctx context.Context, orderID string) (Order, error)
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

// resumeMargin keeps a resumed publish clear of the stream's MaxAge, which
// nats-server measures with its own clock.
const resumeMargin = time.Hour

// Service creates and reads orders.
type Service struct {
	Store     Store
	Publisher EventPublisher
	Payer     Payer
	// Events, when set, lets Get answer and repair an order whose record
	// is missing or left pending.
	Events EventFinder
	// EventRetention is how long the ORDERS stream keeps an event (its
	// MaxAge). Within it, the stream itself says whether an order's event
	// was stored, and a retried key resumes its order by publishing again;
	// after it, only a paid record can say so. Zero means the stream keeps
	// events forever.
	EventRetention time.Duration
	Logger         *slog.Logger
	Now            func() time.Time
}

// Create turns a valid request into a paid order whose event is durably in
// ORDERS. With an idempotency key, a retry returns the first order (resuming
// it if a crash or an outage came before its event was stored) and
// replayed=true; it never stores a second event.
//
// A new order takes one NATS round trip, two with a key: the key's claim
// and the publish. The event is the order's record from its PubAck on; the
// record in the orders bucket is written after the answer.
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
			o.OrderID, o.EventID, o.CreatedAt = bound.OrderID, bound.EventID, bound.CreatedAt
			replayed = true
			if s.EventRetention > 0 && s.now().Sub(o.CreatedAt) >= s.EventRetention-resumeMargin {
				return s.replayOld(ctx, o)
			}
		}
	}
	o, stored, err := s.complete(ctx, o)
	if err != nil {
		return Order{}, false, err
	}
	if replayed && stored {
		s.Logger.Info("resumed an order whose event was not stored before", "order_id", o.OrderID, "event_id", o.EventID)
	}
	return o, replayed, nil
}

// replayOld answers a retried key whose order is older than the stream's
// memory: its paid record, or ErrKeyTooOld when there is none, since the
// event may have been stored and aged out, and publishing it again would
// send a second email.
func (s *Service) replayOld(ctx context.Context, o Order) (Order, bool, error) {
	stored, err := s.Store.Get(ctx, o.OrderID)
	switch {
	case err == nil && stored.Status == StatusPaid:
		return stored, true, nil
	case err == nil || errors.Is(err, ErrNotFound):
		return Order{}, false, ErrKeyTooOld
	}
	return Order{}, false, err
}

// complete runs the steps after the ids are fixed. Each is safe to repeat:
// the payment is idempotent by order id, the publish stores the event at
// most once, and the record is an overwrite.
func (s *Service) complete(ctx context.Context, o Order) (Order, bool, error) {
	if err := s.Payer.Charge(ctx, o.OrderID, o.AmountMinor, o.Currency); err != nil {
		return Order{}, false, fmt.Errorf("charge: %w", err)
	}
	stored, err := s.Publisher.PublishOrderPaid(ctx, o.Event(s.now()), o.CreatedAt)
	if err != nil {
		return Order{}, false, fmt.Errorf("publish order.paid: %w", err)
	}
	// From the PubAck on, the order is paid and its email is on its way:
	// the client hears 201 now, and the record follows.
	o.Status = StatusPaid
	s.Store.Record(o)
	return o, stored, nil
}

// Get returns an order: its record, or, when the record is missing or
// still says pending, what its event in the stream says.
func (s *Service) Get(ctx context.Context, orderID string) (Order, error) {
	if !event.ValidOrderID(orderID) {
		return Order{}, ErrNotFound
	}
	o, err := s.Store.Get(ctx, orderID)
	switch {
	case err == nil && o.Status == StatusPaid, s.Events == nil:
		return o, err
	case err != nil && !errors.Is(err, ErrNotFound):
		return Order{}, err
	}
	found, ferr := s.Events.FindEvent(ctx, orderID)
	switch {
	case errors.Is(ferr, ErrNotFound):
		return o, err
	case ferr != nil:
		return Order{}, ferr
	}
	// A paid order whose record was not written (or, from an earlier
	// version, left pending) by a process that died after the PubAck: its
	// email is on its way, so the record says so from now on.
	if err == nil {
		found.CreatedAt, found.Fingerprint = o.CreatedAt, o.Fingerprint
	}
	s.Store.Record(found)
	s.Logger.Info("order found in the stream; record repaired", "order_id", found.OrderID, "event_id", found.EventID)
	return found, nil
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
