package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"regexp"
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

// Marshal returns the canonical JSON body of the event.
func (e OrderPaid) Marshal() ([]byte, error) {
	return json.Marshal(e)
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
func Decode(body []byte) (OrderPaid, error) {
	if fields := shapeErrors(body); fields != nil {
		return OrderPaid{}, &ValidationError{Fields: fields}
	}
	var e OrderPaid
	if err := DecodeJSON(body, &e); err != nil {
		var pe *time.ParseError
		if errors.As(err, &pe) {
			return OrderPaid{}, &ValidationError{Fields: map[string]string{"timestamp": "must be an RFC 3339 time"}}
		}
		return OrderPaid{}, err
	}
	if fields := e.Validate(); len(fields) > 0 {
		return OrderPaid{}, &ValidationError{Fields: fields}
	}
	return e, nil
}

// shapeErrors reports what makes well-formed JSON the wrong shape for an
// event before it is decoded: a top level that is not an object, or a
// timestamp that is not a string (which encoding/json would report as a
// syntax error). Malformed JSON is left to DecodeJSON.
func shapeErrors(body []byte) map[string]string {
	if !json.Valid(body) {
		return nil
	}
	trimmed := bytes.TrimSpace(body)
	if trimmed[0] != '{' {
		if string(trimmed) == "null" {
			return nil
		}
		return map[string]string{"body": "must be a JSON object"}
	}
	var probe struct {
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if json.Unmarshal(body, &probe) == nil && len(probe.Timestamp) > 0 && probe.Timestamp[0] != '"' && string(probe.Timestamp) != "null" {
		return map[string]string{"timestamp": "must be an RFC 3339 time string"}
	}
	return nil
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
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return &ValidationError{Fields: map[string]string{typeErr.Field: "must be a " + jsonKind(typeErr.Type.Kind().String())}}
		}
		if errors.Is(err, io.EOF) {
			return &SyntaxError{Reason: "empty body"}
		}
		var pe *time.ParseError
		if errors.As(err, &pe) {
			return err
		}
		return &SyntaxError{Reason: err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &SyntaxError{Reason: "unexpected data after the JSON value"}
	}
	if key, ok := duplicateKey(body); ok {
		return &SyntaxError{Reason: fmt.Sprintf("duplicate key %q", key)}
	}
	return nil
}

// duplicateKey finds an object key that occurs twice in the same object.
// encoding/json silently keeps the last one, so a body that a signature
// verifier, a proxy and this decoder could read differently is refused.
// body must already be known to be valid JSON.
func duplicateKey(body []byte) (string, bool) {
	type frame struct {
		object    bool
		expectKey bool
		keys      map[string]struct{}
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].expectKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
			top := stack[n-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			key, _ := tok.(string)
			if _, seen := top.keys[key]; seen {
				return key, true
			}
			top.keys[key] = struct{}{}
			top.expectKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, expectKey: true, keys: map[string]struct{}{}})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
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

var idPattern = regexp.MustCompile(`^evt_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidEventID reports whether id has the shape NewID produces.
func ValidEventID(id string) bool { return idPattern.MatchString(id) }

// ValidOrderID reports whether id is a canonical lower-case UUID, which also
// makes it a safe NATS subject token and KV key.
func ValidOrderID(id string) bool {
	if len(id) != 36 {
		return false
	}
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
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
