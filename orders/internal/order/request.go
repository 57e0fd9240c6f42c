package order

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/money"
)

// DefaultCurrency is used when a request names none.
const DefaultCurrency = "USD"

// Request is a validated POST /orders body with the amount in minor units.
type Request struct {
	ProductName   string
	Quantity      int64
	PriceMinor    int64
	AmountMinor   int64
	Currency      string
	CustomerEmail string
}

// Fingerprint identifies the request's content, so that an Idempotency-Key
// reused with a different body is caught.
func (r Request) Fingerprint() string {
	h := sha256.Sum256(fmt.Appendf(nil, "%q|%d|%d|%q|%q", r.ProductName, r.Quantity, r.PriceMinor, r.Currency, r.CustomerEmail))
	return hex.EncodeToString(h[:])
}

var knownFields = map[string]bool{
	"product_name": true, "quantity": true, "price_per_item": true, "customer_email": true, "currency": true,
}

// ParseRequest decodes and validates a POST /orders body. It returns an
// *event.SyntaxError for malformed JSON and an *event.ValidationError with
// every failing field otherwise. price_per_item may be a JSON number or a
// decimal string; either way it is parsed exactly, never as a float. The
// body is read in one pass, into its members, and each field from its own
// bytes.
func ParseRequest(body []byte) (Request, error) {
	members, err := event.ObjectMembers(body)
	if err != nil {
		return Request{}, &event.SyntaxError{Reason: "body must be a JSON object"}
	}
	raw := make(map[string][]byte, len(members))
	errs := map[string]string{}
	for _, m := range members {
		raw[m.Key] = m.Value
		if !knownFields[m.Key] {
			errs[m.Key] = "is not a known field"
		}
	}
	var r Request
	r.ProductName = stringField(raw, "product_name", errs)
	if _, bad := errs["product_name"]; !bad {
		if msg := event.ValidProductName(r.ProductName); msg != "" {
			errs["product_name"] = msg
		}
	}
	r.CustomerEmail = stringField(raw, "customer_email", errs)
	if _, bad := errs["customer_email"]; !bad && !event.ValidEmail(r.CustomerEmail) {
		errs["customer_email"] = "must be an email address such as ada@example.com"
	}
	r.Currency = DefaultCurrency
	if _, ok := raw["currency"]; ok {
		r.Currency = stringField(raw, "currency", errs)
		if _, bad := errs["currency"]; !bad && !money.ValidCurrency(r.Currency) {
			errs["currency"] = "must be an upper-case ISO 4217 code such as USD"
		}
	}
	r.Quantity = quantityField(raw, errs)
	if _, bad := errs["currency"]; !bad {
		r.PriceMinor = priceField(raw, r.Currency, errs)
	}
	if len(errs) == 0 {
		amount, err := money.Multiply(r.PriceMinor, r.Quantity)
		if err != nil {
			errs["price_per_item"] = "times quantity is too large"
		}
		r.AmountMinor = amount
	}
	if len(errs) > 0 {
		return Request{}, &event.ValidationError{Fields: errs}
	}
	return r, nil
}

func stringField(raw map[string][]byte, name string, errs map[string]string) string {
	v, ok := raw[name]
	if !ok || string(v) == "null" {
		errs[name] = "is required"
		return ""
	}
	s, ok := event.StringValue(v)
	if !ok {
		errs[name] = "must be a string"
		return ""
	}
	return s
}

func quantityField(raw map[string][]byte, errs map[string]string) int64 {
	v, ok := raw["quantity"]
	if !ok || string(v) == "null" {
		errs["quantity"] = "is required"
		return 0
	}
	msg := fmt.Sprintf("must be an integer between 1 and %d", event.MaxQuantity)
	if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		errs["quantity"] = msg
		return 0
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 1 || n > event.MaxQuantity {
		errs["quantity"] = msg
		return 0
	}
	return n
}

func priceField(raw map[string][]byte, currency string, errs map[string]string) int64 {
	v, ok := raw["price_per_item"]
	if !ok || string(v) == "null" {
		errs["price_per_item"] = "is required"
		return 0
	}
	text := string(v)
	if len(v) > 0 && v[0] == '"' {
		if text, ok = event.StringValue(v); !ok {
			errs["price_per_item"] = "must be a number or a decimal string"
			return 0
		}
	}
	// Only plain decimals: an exponent ("1e2"), a plus sign, spaces or a
	// thousands separator make a price easy to misread, so they are refused
	// rather than guessed at.
	if !plainDecimal(text) {
		errs["price_per_item"] = "must be a plain decimal such as 10.50 or \"10.50\""
		return 0
	}
	minor, err := money.ParseDecimal(text, currency)
	if err != nil {
		errs["price_per_item"] = err.Error()
		return 0
	}
	return minor
}

// plainDecimal reports whether s is an optional minus, 1 to 20 digits, and
// optionally a point and 1 to 20 more digits.
func plainDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	whole, frac, dot := strings.Cut(s, ".")
	return digits(whole) && (!dot || digits(frac))
}

func digits(s string) bool {
	if len(s) < 1 || len(s) > 20 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
