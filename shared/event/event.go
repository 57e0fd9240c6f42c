package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/jethook/jethook/shared/money"
)

// TypeOrderPaid is the type of the event published when an order is paid.
// A breaking change to its data gets a new type, never a new meaning.
const TypeOrderPaid = "order.paid"

// IDPrefix starts every event id.
const IDPrefix = "evt_"

// Limits shared by the orders API and the webhook receiver.
const (
	MaxProductNameLen = 200
	MaxQuantity       = 10_000
	MaxEmailLen       = 254
)

// OrderPaid is the whole event: Standard Webhooks payload shape.
type OrderPaid struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      OrderData `json:"data"`
}

// OrderData is the order as the event carries it. Amounts are integer minor
// units of Currency.
type OrderData struct {
	OrderID       string `json:"order_id"`
	CustomerEmail string `json:"customer_email"`
	ProductName   string `json:"product_name"`
	Quantity      int64  `json:"quantity"`
	AmountMinor   int64  `json:"amount_minor"`
	Currency      string `json:"currency"`
}

// NewID returns a fresh event id: "evt_" and a UUIDv7, so that ids sort by
// creation time.
func NewID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("event id: %w", err)
	}
	return IDPrefix + u.String(), nil
}

// Subject returns the ORDERS stream subject of an order's paid event.
func Subject(orderID string) string { return "orders.paid." + orderID }

// Marshal returns the canonical JSON body of the event: what
// encoding/json.Marshal writes for it, byte for byte, appended field by
// field instead of through reflection.
func (e OrderPaid) Marshal() ([]byte, error) {
	d := e.Data
	b := make([]byte, 0, 256+len(d.ProductName)+len(d.CustomerEmail))
	b = append(b, `{"id":`...)
	b = AppendString(b, e.ID)
	b = append(b, `,"type":`...)
	b = AppendString(b, e.Type)
	b = append(b, `,"timestamp":`...)
	b, err := AppendTime(b, e.Timestamp)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"data":{"order_id":`...)
	b = AppendString(b, d.OrderID)
	b = append(b, `,"customer_email":`...)
	b = AppendString(b, d.CustomerEmail)
	b = append(b, `,"product_name":`...)
	b = AppendString(b, d.ProductName)
	b = append(b, `,"quantity":`...)
	b = strconv.AppendInt(b, d.Quantity, 10)
	b = append(b, `,"amount_minor":`...)
	b = strconv.AppendInt(b, d.AmountMinor, 10)
	b = append(b, `,"currency":`...)
	b = AppendString(b, d.Currency)
	return append(b, "}}"...), nil
}

// SyntaxError means the body is not a single well-formed JSON object of the
// expected shape (HTTP 400).
type SyntaxError struct{ Reason string }

func (e *SyntaxError) Error() string { return "malformed JSON: " + e.Reason }

// ValidationError lists the fields that break the contract, field → message
// (HTTP 422).
type ValidationError struct{ Fields map[string]string }

func (e *ValidationError) Error() string {
	parts := make([]string, 0, len(e.Fields))
	for f, m := range e.Fields {
		parts = append(parts, f+": "+m)
	}
	return "invalid event: " + strings.Join(parts, "; ")
}

// Decode parses and validates a webhook body. Unknown fields are allowed
// (the contract grows by optional fields); trailing data is not. It returns
// a *SyntaxError or a *ValidationError.
//
// The body is decoded once, with the timestamp kept raw; then the checks
// run in the order that gives each body its error: the shape of well-formed
// JSON (a top level that is not an object, a timestamp that is not a
// string), the encoding, the syntax, a timestamp that is not RFC 3339 (it
// wins over the other fields' type errors, as when decoding into a
// time.Time, which stops there), the types, trailing data, duplicate keys,
// and last the contract. A body written as Marshal writes one, with no
// escape in its strings, takes a fast path to the same event
// (decodePlain).
func Decode(body []byte) (OrderPaid, error) {
	if e, ok := decodePlain(body); ok {
		return e, nil
	}
	return decodeFull(body)
}

// decodeFull is Decode for every body, in the order of checks above.
func decodeFull(body []byte) (OrderPaid, error) {
	var w struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Timestamp json.RawMessage `json:"timestamp"`
		Data      OrderData       `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	err := dec.Decode(&w)
	var typeErr *json.UnmarshalTypeError
	decoded := err == nil || errors.As(err, &typeErr)
	if decoded && err != nil && typeErr.Field == "" {
		// A top level of the wrong type names the type it was decoded
		// into: the event's, not this raw form's.
		typeErr.Type = reflect.TypeFor[OrderPaid]()
	}
	// Decoded with nothing but white space after it is what json.Valid
	// accepts, without a pass of its own.
	ended := decoded && atEnd(dec)
	ts := w.Timestamp
	if ended {
		if top := firstByte(body); top != '{' && top != 'n' {
			return OrderPaid{}, &ValidationError{Fields: map[string]string{"body": "must be a JSON object"}}
		}
		if len(ts) > 0 && ts[0] != '"' && string(ts) != "null" {
			return OrderPaid{}, &ValidationError{Fields: map[string]string{"timestamp": "must be an RFC 3339 time string"}}
		}
	}
	if !utf8.Valid(body) {
		return OrderPaid{}, &SyntaxError{Reason: "body is not valid UTF-8"}
	}
	if !decoded {
		return OrderPaid{}, decodeError(err)
	}
	e := OrderPaid{ID: w.ID, Type: w.Type, Data: w.Data}
	if len(ts) > 0 {
		var err error
		if e.Timestamp, err = decodeTimestamp(body); err != nil {
			var pe *time.ParseError
			if errors.As(err, &pe) {
				return OrderPaid{}, &ValidationError{Fields: map[string]string{"timestamp": "must be an RFC 3339 time"}}
			}
			return OrderPaid{}, &SyntaxError{Reason: err.Error()}
		}
	}
	if err != nil {
		return OrderPaid{}, decodeError(err)
	}
	if !ended {
		return OrderPaid{}, &SyntaxError{Reason: "unexpected data after the JSON value"}
	}
	if key, ok := duplicateKey(body); ok {
		return OrderPaid{}, &SyntaxError{Reason: fmt.Sprintf("duplicate key %q", key)}
	}
	if fields := e.Validate(); len(fields) > 0 {
		return OrderPaid{}, &ValidationError{Fields: fields}
	}
	return e, nil
}

// decodeTimestamp decodes the timestamp of body as decoding into a
// time.Time does. Of members whose keys match a field but for case
// ("timestamp", "timeStamp"), the raw timestamp holds only the last; a
// time.Time takes them in turn, stops at the first that fails, which
// decides, as the order of checks above says, and is left as it was by a
// null. Only bodies off the fast path pay for this second pass.
func decodeTimestamp(body []byte) (time.Time, error) {
	var probe struct {
		Timestamp time.Time `json:"timestamp"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	err := dec.Decode(&probe)
	return probe.Timestamp, err
}

// firstByte is the first byte of body that is not JSON white space, or 0.
func firstByte(body []byte) byte {
	for _, c := range body {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return c
		}
	}
	return 0
}

// atEnd reports whether dec has nothing left but white space.
func atEnd(dec *json.Decoder) bool {
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

// decodeError maps an error of json.Decoder.Decode: a type mismatch is a
// ValidationError naming the field, anything else a SyntaxError.
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return &ValidationError{Fields: map[string]string{typeErr.Field: "must be a " + jsonKind(typeErr.Type.Kind().String())}}
	}
	if errors.Is(err, io.EOF) {
		return &SyntaxError{Reason: "empty body"}
	}
	return &SyntaxError{Reason: err.Error()}
}

// DecodeJSON decodes exactly one JSON value into v. A type mismatch is
// reported as a ValidationError naming the field, anything else that is not
// JSON as a SyntaxError.
func DecodeJSON(body []byte, v any) error {
	if !utf8.Valid(body) {
		return &SyntaxError{Reason: "body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var pe *time.ParseError
		if errors.As(err, &pe) {
			return err
		}
		return decodeError(err)
	}
	if !atEnd(dec) {
		return &SyntaxError{Reason: "unexpected data after the JSON value"}
	}
	if key, ok := duplicateKey(body); ok {
		return &SyntaxError{Reason: fmt.Sprintf("duplicate key %q", key)}
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "number"
	case "struct", "map":
		return "object"
	case "slice":
		return "array"
	default:
		return goKind
	}
}

// ValidEventID reports whether id has the shape NewID produces: "evt_"
// and a canonical lower-case UUID.
func ValidEventID(id string) bool {
	rest, ok := strings.CutPrefix(id, IDPrefix)
	return ok && ValidOrderID(rest)
}

// ValidOrderID reports whether id is a canonical lower-case UUID
// (8-4-4-4-12 hex digits), which also makes it a safe NATS subject token
// and KV key.
func ValidOrderID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// ValidEmail reports whether s is a single bare ASCII address such as
// ada@example.com: no display name, no spaces or control characters. ASCII
// because delivering to internationalised addresses needs SMTPUTF8, which
// the mail path does not promise.
func ValidEmail(s string) bool {
	if s == "" || len(s) > MaxEmailLen || strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r >= 0x7f }) {
		return false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	return at > 0 && strings.Contains(s[at+1:], ".")
}

// ValidProductName reports a problem with a product name, or "" when fine.
func ValidProductName(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "is required"
	case utf8.RuneCountInString(s) > MaxProductNameLen:
		return fmt.Sprintf("must be at most %d characters", MaxProductNameLen)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "must not contain control characters"
	}
	return ""
}

// Validate returns field → message for every field that breaks the
// contract; empty when the event is valid.
func (e OrderPaid) Validate() map[string]string {
	f := map[string]string{}
	if !ValidEventID(e.ID) {
		f["id"] = "must be evt_ followed by a UUID"
	}
	if e.Type != TypeOrderPaid {
		f["type"] = "must be " + TypeOrderPaid
	}
	if e.Timestamp.IsZero() {
		f["timestamp"] = "is required (RFC 3339)"
	}
	d := e.Data
	if !ValidOrderID(d.OrderID) {
		f["data.order_id"] = "must be a UUID"
	}
	if !ValidEmail(d.CustomerEmail) {
		f["data.customer_email"] = "must be an email address"
	}
	if msg := ValidProductName(d.ProductName); msg != "" {
		f["data.product_name"] = msg
	}
	if d.Quantity < 1 || d.Quantity > MaxQuantity {
		f["data.quantity"] = fmt.Sprintf("must be between 1 and %d", MaxQuantity)
	}
	if d.AmountMinor <= 0 || d.AmountMinor > money.MaxMinor {
		f["data.amount_minor"] = "must be a positive integer amount in minor units"
	}
	if !money.ValidCurrency(d.Currency) {
		f["data.currency"] = "must be an ISO 4217 currency code"
	}
	return f
}
