package order

import (
	"strconv"
	"time"

	"github.com/jethook/jethook/shared/event"
)

// Status of an order. Every order the API has answered 201 for is paid: its
// order.paid event is durably in the ORDERS stream. Records written before
// the stream became the record of an order may still say pending, from the
// moment their ids were fixed until the event was stored; GET puts them
// right.
const (
	StatusPending = "pending"
	StatusPaid    = "paid"
)

// Order is what the API returns and what the orders bucket stores.
type Order struct {
	OrderID       string    `json:"order_id"`
	Status        string    `json:"status"`
	EventID       string    `json:"event_id"`
	CustomerEmail string    `json:"customer_email"`
	ProductName   string    `json:"product_name"`
	Quantity      int64     `json:"quantity"`
	AmountMinor   int64     `json:"amount_minor"`
	Currency      string    `json:"currency"`
	CreatedAt     time.Time `json:"created_at"`
	// Fingerprint ties the order to the request that created it; it is not
	// part of the API answer.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// AppendJSON appends o as JSON, exactly as encoding/json.Marshal writes it
// (with the fingerprint left out when empty), field by field instead of
// through reflection: it is the answer to every POST and GET, and the
// record in the orders bucket.
func (o Order) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"order_id":`...)
	b = event.AppendString(b, o.OrderID)
	b = append(b, `,"status":`...)
	b = event.AppendString(b, o.Status)
	b = append(b, `,"event_id":`...)
	b = event.AppendString(b, o.EventID)
	b = append(b, `,"customer_email":`...)
	b = event.AppendString(b, o.CustomerEmail)
	b = append(b, `,"product_name":`...)
	b = event.AppendString(b, o.ProductName)
	b = append(b, `,"quantity":`...)
	b = strconv.AppendInt(b, o.Quantity, 10)
	b = append(b, `,"amount_minor":`...)
	b = strconv.AppendInt(b, o.AmountMinor, 10)
	b = append(b, `,"currency":`...)
	b = event.AppendString(b, o.Currency)
	b = append(b, `,"created_at":`...)
	b, err := event.AppendTime(b, o.CreatedAt)
	if err != nil {
		return nil, err
	}
	if o.Fingerprint != "" {
		b = append(b, `,"fingerprint":`...)
		b = event.AppendString(b, o.Fingerprint)
	}
	return append(b, '}'), nil
}

// Event returns the order.paid event of the order, published at
// publishedAt. Its id and data are fixed when the order is created, so
// every attempt to publish it carries the same event id; its timestamp is
// the attempt's own, so that an order resumed days after its creation does
// not publish an event that receivers refuse as too old. JetStream stores
// only the first attempt that reaches it.
func (o Order) Event(publishedAt time.Time) event.OrderPaid {
	return event.OrderPaid{
		ID:        o.EventID,
		Type:      event.TypeOrderPaid,
		Timestamp: publishedAt.UTC().Truncate(time.Second),
		Data: event.OrderData{
			OrderID:       o.OrderID,
			CustomerEmail: o.CustomerEmail,
			ProductName:   o.ProductName,
			Quantity:      o.Quantity,
			AmountMinor:   o.AmountMinor,
			Currency:      o.Currency,
		},
	}
}

// FromEvent returns the paid order that e is the event of, created at
// createdAt. The request's fingerprint is derived again: the amount is the
// price per item times the quantity, exactly.
func FromEvent(e event.OrderPaid, createdAt time.Time) Order {
	d := e.Data
	req := Request{ProductName: d.ProductName, Quantity: d.Quantity, AmountMinor: d.AmountMinor, Currency: d.Currency, CustomerEmail: d.CustomerEmail}
	if d.Quantity > 0 {
		req.PriceMinor = d.AmountMinor / d.Quantity
	}
	return Order{
		OrderID:       d.OrderID,
		Status:        StatusPaid,
		EventID:       e.ID,
		CustomerEmail: d.CustomerEmail,
		ProductName:   d.ProductName,
		Quantity:      d.Quantity,
		AmountMinor:   d.AmountMinor,
		Currency:      d.Currency,
		CreatedAt:     createdAt.UTC(),
		Fingerprint:   req.Fingerprint(),
	}
}
