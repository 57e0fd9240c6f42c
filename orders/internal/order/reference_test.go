package order

// ParseRequest as it was before it read the body in one pass, kept as the
// reference that FuzzParseRequestMatchesReference holds the current one to.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/money"
)

var refPlainDecimal = regexp.MustCompile(`^-?[0-9]{1,20}(\.[0-9]{1,20})?$`)

// refParseRequest is ParseRequest decoding the body into a map of raw
// messages, then each field with encoding/json again.
func refParseRequest(body []byte) (Request, error) {
	var raw map[string]json.RawMessage
	if err := event.DecodeJSON(body, &raw); err != nil || raw == nil {
		return Request{}, &event.SyntaxError{Reason: "body must be a JSON object"}
	}
	errs := map[string]string{}
	for k := range raw {
		if !knownFields[k] {
			errs[k] = "is not a known field"
		}
	}
	var r Request
	r.ProductName = refStringField(raw, "product_name", errs)
	if _, bad := errs["product_name"]; !bad {
		if msg := event.ValidProductName(r.ProductName); msg != "" {
			errs["product_name"] = msg
		}
	}
	r.CustomerEmail = refStringField(raw, "customer_email", errs)
	if _, bad := errs["customer_email"]; !bad && !event.ValidEmail(r.CustomerEmail) {
		errs["customer_email"] = "must be an email address such as ada@example.com"
	}
	r.Currency = DefaultCurrency
	if _, ok := raw["currency"]; ok {
		r.Currency = refStringField(raw, "currency", errs)
		if _, bad := errs["currency"]; !bad && !money.ValidCurrency(r.Currency) {
			errs["currency"] = "must be an upper-case ISO 4217 code such as USD"
		}
	}
	r.Quantity = refQuantityField(raw, errs)
	if _, bad := errs["currency"]; !bad {
		r.PriceMinor = refPriceField(raw, r.Currency, errs)
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

func refStringField(raw map[string]json.RawMessage, name string, errs map[string]string) string {
	v, ok := raw[name]
	if !ok || string(v) == "null" {
		errs[name] = "is required"
		return ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		errs[name] = "must be a string"
		return ""
	}
	return s
}

func refQuantityField(raw map[string]json.RawMessage, errs map[string]string) int64 {
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

func refPriceField(raw map[string]json.RawMessage, currency string, errs map[string]string) int64 {
	v, ok := raw["price_per_item"]
	if !ok || string(v) == "null" {
		errs["price_per_item"] = "is required"
		return 0
	}
	text := string(v)
	if len(v) > 0 && v[0] == '"' {
		if err := json.Unmarshal(v, &text); err != nil {
			errs["price_per_item"] = "must be a number or a decimal string"
			return 0
		}
	}
	// Only plain decimals: an exponent ("1e2"), a plus sign, spaces or a
	// thousands separator make a price easy to misread, so they are refused
	// rather than guessed at.
	if !refPlainDecimal.MatchString(text) {
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

// FuzzParseRequestMatchesReference: for every body, the same request or
// the same error, field by field.
func FuzzParseRequestMatchesReference(f *testing.F) {
	for _, seed := range fuzzSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := ParseRequest(body)
		want, wantErr := refParseRequest(body)
		if got != want || fmt.Sprintf("%T", gotErr) != fmt.Sprintf("%T", wantErr) {
			t.Fatalf("ParseRequest(%q) = %+v, %v\nreference         %+v, %v", body, got, gotErr, want, wantErr)
		}
		var gv, wv *event.ValidationError
		var gs, ws *event.SyntaxError
		switch {
		case errors.As(wantErr, &wv):
			if !errors.As(gotErr, &gv) || !maps.Equal(gv.Fields, wv.Fields) {
				t.Fatalf("ParseRequest(%q) = %v, reference %v", body, gotErr, wantErr)
			}
		case errors.As(wantErr, &ws):
			if !errors.As(gotErr, &gs) || gs.Reason != ws.Reason {
				t.Fatalf("ParseRequest(%q) = %v, reference %v", body, gotErr, wantErr)
			}
		}
	})
}

// FuzzOrderJSONMatchesEncodingJSON holds AppendJSON to what encoding/json
// writes for the order, byte for byte, whatever the strings hold.
func FuzzOrderJSONMatchesEncodingJSON(f *testing.F) {
	f.Add("0193a5b2-7c1d-7aaa-8bbb-0123456789ab", "paid", "ada@example.com", "Book", "USD", "", int64(2), int64(2100), int64(1795860000), int64(0))
	f.Add("<&>\u2028\u2029\x00\x1f\x7f\"\\", "\xff\xfe", "ä\tb\nc\rd\be\f", "\u00e9\U0001F4A5", "", "fefa5fd7", int64(-1), int64(0), int64(-62135596800), int64(-90))
	f.Fuzz(func(t *testing.T, id, status, email, product, currency, fingerprint string, quantity, amount, unix, offsetMinutes int64) {
		o := Order{
			OrderID: id, Status: status, EventID: "evt_" + id, CustomerEmail: email, ProductName: product,
			Quantity: quantity, AmountMinor: amount, Currency: currency, Fingerprint: fingerprint,
			CreatedAt: time.Unix(unix, 0).In(time.FixedZone("", int(offsetMinutes%(24*60))*60)),
		}
		got, gotErr := o.AppendJSON(nil)
		want, wantErr := json.Marshal(o)
		if (gotErr == nil) != (wantErr == nil) || string(got) != string(want) {
			t.Fatalf("AppendJSON(%+v) = %s, %v\nencoding/json   %s, %v", o, got, gotErr, want, wantErr)
		}
	})
}
