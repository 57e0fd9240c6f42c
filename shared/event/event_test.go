package event

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func golden(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/order_paid.json")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// TestGoldenRoundTrip pins the wire format: the example in testdata decodes
// and marshals back byte for byte, so a change to field names or order fails.
func TestGoldenRoundTrip(t *testing.T) {
	body := golden(t)
	e, err := Decode(body)
	if err != nil {
		t.Fatalf("Decode(golden) = %v", err)
	}
	want := OrderPaid{
		ID: "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", Type: TypeOrderPaid,
		Timestamp: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
		Data: OrderData{OrderID: "0193a5b2-7c1d-7aaa-8bbb-0123456789ab", CustomerEmail: "ada@example.com",
			ProductName: "Book", Quantity: 2, AmountMinor: 2100, Currency: "USD"},
	}
	if e != want {
		t.Fatalf("Decode(golden) = %+v, want %+v", e, want)
	}
	out, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, body) {
		t.Fatalf("Marshal = %s\nwant     %s", out, body)
	}
}

func TestNewID(t *testing.T) {
	a, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewID()
	if !ValidEventID(a) || !ValidEventID(b) || a == b {
		t.Fatalf("NewID gave %q and %q", a, b)
	}
	if !strings.HasPrefix(a, "evt_") || a[4+14] != '7' {
		t.Fatalf("NewID %q is not evt_ + UUIDv7", a)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := string(golden(t))
	tests := []struct {
		name      string
		body      string
		syntax    bool
		wantField string
	}{
		{"empty", ``, true, ""},
		{"truncated", valid[:40], true, ""},
		{"trailing garbage", valid + `x`, true, ""},
		{"two objects", valid + valid, true, ""},
		{"array", `[]`, false, "body"},
		{"string", `"order.paid"`, false, "body"},
		{"number timestamp", strings.Replace(valid, `"2026-11-28T10:00:00Z"`, `5`, 1), false, "timestamp"},
		{"object timestamp", strings.Replace(valid, `"2026-11-28T10:00:00Z"`, `{}`, 1), false, "timestamp"},
		{"duplicate top-level key", strings.Replace(valid, `"type":"order.paid"`, `"type":"order.paid","type":"order.paid"`, 1), true, ""},
		{"duplicate nested key", strings.Replace(valid, `"quantity":2`, `"quantity":2,"quantity":200`, 1), true, ""},
		{"unicode email", strings.Replace(valid, `ada@example.com`, `ädä@example.com`, 1), false, "data.customer_email"},
		{"invalid utf-8", "{\"id\":\"\xff\"}", true, ""},
		{"wrong type for quantity", strings.Replace(valid, `"quantity":2`, `"quantity":"2"`, 1), false, "data.quantity"},
		{"float quantity", strings.Replace(valid, `"quantity":2`, `"quantity":2.5`, 1), false, "data.quantity"},
		{"huge quantity", strings.Replace(valid, `"quantity":2`, `"quantity":99999999999999999999`, 1), false, "data.quantity"},
		{"zero quantity", strings.Replace(valid, `"quantity":2`, `"quantity":0`, 1), false, "data.quantity"},
		{"bad timestamp", strings.Replace(valid, `2026-11-28T10:00:00Z`, `yesterday`, 1), false, "timestamp"},
		{"wrong type", strings.Replace(valid, `order.paid`, `order.refunded`, 1), false, "type"},
		{"bad id", strings.Replace(valid, `evt_0193a5b2`, `evt_x193a5b2`, 1), false, "id"},
		{"bad email", strings.Replace(valid, `ada@example.com`, `ada`, 1), false, "data.customer_email"},
		{"bad currency", strings.Replace(valid, `"USD"`, `"usd"`, 1), false, "data.currency"},
		{"negative amount", strings.Replace(valid, `2100`, `-1`, 1), false, "data.amount_minor"},
		{"order id with dot", strings.Replace(valid, `0193a5b2-7c1d`, `0193a5b2.7c1d`, 1), false, "data.order_id"},
		{"missing data", `{"id":"evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60","type":"order.paid","timestamp":"2026-11-28T10:00:00Z"}`, false, "data.order_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			var se *SyntaxError
			var ve *ValidationError
			switch {
			case tt.syntax:
				if !errors.As(err, &se) {
					t.Fatalf("Decode = %v, want SyntaxError", err)
				}
			default:
				if !errors.As(err, &ve) {
					t.Fatalf("Decode = %v, want ValidationError", err)
				}
				if _, ok := ve.Fields[tt.wantField]; !ok {
					t.Fatalf("ValidationError fields %v lack %q", ve.Fields, tt.wantField)
				}
			}
		})
	}
}

// TestDuplicateKeyScope: the same key in different objects, or in objects
// inside arrays, is not a duplicate.
func TestDuplicateKeyScope(t *testing.T) {
	for _, body := range []string{
		`{"a":{"id":1},"id":2}`,
		`{"a":[{"id":1},{"id":2}],"b":[[],{}],"id":3}`,
		`{"a":{},"b":{"a":{"a":1}}}`,
	} {
		if key, dup := duplicateKey([]byte(body)); dup {
			t.Errorf("duplicateKey(%s) = %q, want none", body, key)
		}
	}
	for body, want := range map[string]string{
		`{"a":1,"a":2}`:              "a",
		`{"x":[{"b":1,"b":1}]}`:      "b",
		`{"x":{"y":{}},"z":0,"x":1}`: "x",
	} {
		if key, dup := duplicateKey([]byte(body)); !dup || key != want {
			t.Errorf("duplicateKey(%s) = %q, %v; want %q", body, key, dup, want)
		}
	}
}

// TestDecodeToleratesNewOptionalFields keeps the contract open to additive
// versions: a receiver must accept fields it does not know yet.
func TestDecodeToleratesNewOptionalFields(t *testing.T) {
	body := strings.Replace(string(golden(t)), `"currency":"USD"`, `"currency":"USD","coupon":"X"`, 1)
	if _, err := Decode([]byte(body)); err != nil {
		t.Fatalf("Decode with an extra field = %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(golden(f))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"data":{"quantity":1e400}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := Decode(body)
		if err != nil {
			var se *SyntaxError
			var ve *ValidationError
			if !errors.As(err, &se) && !errors.As(err, &ve) {
				t.Fatalf("Decode returned an untyped error %T: %v", err, err)
			}
			return
		}
		if len(e.Validate()) != 0 {
			t.Fatalf("Decode accepted an invalid event: %v", e.Validate())
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	body := golden(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	e, err := Decode(golden(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// The bodies the pipeline makes take the fast path; the rest still decode,
// the long way, to the same event.
func TestDecodePlain(t *testing.T) {
	body := golden(t)
	e, ok := decodePlain(body)
	if !ok {
		t.Fatalf("the golden body did not take the fast path")
	}
	if want, err := decodeFull(body); err != nil || e != want {
		t.Fatalf("fast path %+v, full decoder %+v, %v", e, want, err)
	}
	remarshalled, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decodePlain(remarshalled); !ok {
		t.Fatalf("Marshal's body %s did not take the fast path", remarshalled)
	}
	escaped := bytes.Replace(body, []byte(`"Book"`), []byte(`"B\u006fok"`), 1)
	if _, ok := decodePlain(escaped); ok {
		t.Fatalf("a body with an escape took the fast path")
	}
	if got, err := Decode(escaped); err != nil || got != e {
		t.Fatalf("Decode(%s) = %+v, %v, want %+v", escaped, got, err, e)
	}
}

func TestPlainID(t *testing.T) {
	tests := []struct {
		name, body, want string
		ok               bool
	}{
		{"an order.paid event", string(golden(t)), "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", true},
		{"a ping, with data of every kind", `{"id":"evt_1","type":"webhook.test","data":{"a":[1,-2.5e+3,true,false,null,{"b":[]}]}}`, "evt_1", true},
		{"an escape in the id is for the full decoder", `{"id":"evt\u005f1"}`, "", false},
		{"a key encoding/json also matches", `{"ID":"a","id":"b"}`, "", false},
		{"no id", `{"type":"order.paid"}`, "", false},
		{"not an object", `["id"]`, "", false},
		{"broken JSON", `{"id":"a","b":[1,]}`, "", false},
		{"data after the object", `{"id":"a"} x`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PlainID([]byte(tt.body))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("PlainID(%s) = %q, %v, want %q, %v", tt.body, got, ok, tt.want, tt.ok)
			}
		})
	}
}
