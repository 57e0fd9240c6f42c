package event

// The decoder as it was before its passes were folded into one, kept as
// the reference that the fuzz tests hold the current one to: for every
// body, the same event or the same error.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

func refDecode(body []byte) (OrderPaid, error) {
	if fields := refShapeErrors(body); fields != nil {
		return OrderPaid{}, &ValidationError{Fields: fields}
	}
	var e OrderPaid
	if err := refDecodeJSON(body, &e); err != nil {
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

func refShapeErrors(body []byte) map[string]string {
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

func refDecodeJSON(body []byte, v any) error {
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
	if key, ok := refDuplicateKey(body); ok {
		return &SyntaxError{Reason: fmt.Sprintf("duplicate key %q", key)}
	}
	return nil
}

func refDuplicateKey(body []byte) (string, bool) {
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

// sameEvent reports whether got and want are the same event: the same
// instant in the same offset from UTC, whether or not the two times share
// a *time.Location (the time package caches only whole-hour zones).
func sameEvent(got, want OrderPaid) bool {
	_, gotOffset := got.Timestamp.Zone()
	_, wantOffset := want.Timestamp.Zone()
	gt, wt := got.Timestamp, want.Timestamp
	got.Timestamp, want.Timestamp = time.Time{}, time.Time{}
	return got == want && gt.Equal(wt) && gotOffset == wantOffset
}

// sameError reports whether got and want are the same error: the same kind,
// and the same reason or the same fields and messages.
func sameError(got, want error) bool {
	var gs, ws *SyntaxError
	var gv, wv *ValidationError
	switch {
	case got == nil || want == nil:
		return got == nil && want == nil
	case errors.As(want, &ws):
		return errors.As(got, &gs) && gs.Reason == ws.Reason
	case errors.As(want, &wv):
		return errors.As(got, &gv) && maps.Equal(gv.Fields, wv.Fields)
	}
	return reflect.TypeOf(got) == reflect.TypeOf(want) && got.Error() == want.Error()
}

// seeds are bodies that reach every branch of the decoders.
func seeds(tb testing.TB) [][]byte {
	valid := string(golden(tb))
	bodies := []string{
		valid, `{}`, `null`, ``, ` `, `[]`, `[1]`, `"x"`, `5`, `true`, `{} {}`, `{"a":1} x`, valid + `x`, valid + valid,
		`{"data":{"quantity":1e400}}`, `{"id":1,"id":2}`, `{"timestamp":5,"id":"a","id":"b"}`,
		`{"timestamp":"yesterday","data":{"quantity":"x"}}`, `{"data":{"quantity":"x"},"timestamp":"yesterday"}`,
		`{"timestamp":5} x`, `{"timestamp":{}}`, `{"timestamp":null}`, `{"TimeStamp":5}`, `{"timestamp":"2026-11-28T10:00:00Z","Timestamp":[1]}`,
		`{"data":5}`, `{"data":[]}`, "{\"id\":\"\xff\"}", "{\"timestamp\":5,\"id\":\"\xff\"}",
		`{"a\u0062":1,"ab":2}`, `{"\ud800":1,"\udbff":2}`, `{"x":[{"b":1,"b":1}]}`, `{"a":{"id":1},"id":2}`,
		strings.Replace(valid, `"quantity":2`, `"quantity":2.5`, 1),
		strings.Replace(valid, `2026-11-28T10:00:00Z`, `2026-11-28T10:00:00+01:00`, 1),
		strings.Replace(valid, `2026-11-28T10:00:00Z`, `2026-11-28T10:00:00+05:30`, 1),
		// Timestamps under keys equal but for case: the first that is no
		// time decides.
		`{"timestAmp":"","timestAmp":0}0`,
		strings.Replace(valid, `"timestamp":`, `"timeStamp":"","timestamp":`, 1),
		strings.Replace(valid, `"data":`, `"TimeStamp":"yesterday","data":`, 1),
		strings.Replace(valid, `"data":`, `"TimeStamp":null,"data":`, 1),
		strings.Replace(valid, `"currency":"USD"`, `"currency":"USD","coupon":{"k":[1,{"k":2}]}`, 1),
		`{"a":` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}`,
		// Near the plain shape that decodePlain takes.
		" \n{ \"data\" :\t" + valid[strings.Index(valid, `{"order_id"`):len(valid)-1] + " , \"timestamp\":\"2026-11-28T10:00:00Z\",\"type\":\"order.paid\",\"id\":" + valid[6:strings.Index(valid, `,"type"`)] + "}\r\n",
		strings.Replace(valid, `"quantity":2`, `"quantity":02`, 1),
		strings.Replace(valid, `"quantity":2`, `"quantity":-0`, 1),
		strings.Replace(valid, `"quantity":2`, `"quantity":2e0`, 1),
		strings.Replace(valid, `"quantity":2`, `"quantity":"2"`, 1),
		strings.Replace(valid, `"amount_minor":2100`, `"amount_minor":9999999999999999999`, 1),
		strings.Replace(valid, `"amount_minor":2100`, `"amount_minor":210000000000000000`, 1),
		strings.Replace(valid, `"currency":"USD"`, `"currency":"USD","currency":"EUR"`, 1),
		strings.Replace(valid, `"currency":"USD"`, `"currency":"\u0055SD"`, 1),
		strings.Replace(valid, `"type":"order.paid"`, `"Type":"order.paid"`, 1),
		strings.Replace(valid, `"type":"order.paid"`, `"type":"order.paid","type":"order.paid"`, 1),
		strings.Replace(valid, `"product_name":"Book"`, "\"product_name\":\"B\xc3\xa4\x7fk\"", 1),
		strings.Replace(valid, `"product_name":"Book"`, "\"product_name\":\"B\tk\"", 1),
		strings.Replace(valid, `"data":{`, `"data":{"order_id":null,`, 1),
		strings.Replace(valid, `"data":{`, `"data" {`, 1),
		strings.Replace(valid, `,"data"`, `,,"data"`, 1),
		strings.Replace(valid, `}}`, `,}}`, 1),
		strings.ToUpper(valid),
		valid[:len(valid)-1],
	}
	out := make([][]byte, len(bodies))
	for i, b := range bodies {
		out[i] = []byte(b)
	}
	return out
}

func FuzzDecodeMatchesReference(f *testing.F) {
	for _, b := range seeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := Decode(body)
		want, wantErr := refDecode(body)
		if !sameEvent(got, want) || !sameError(gotErr, wantErr) {
			t.Fatalf("Decode(%q) = %+v, %v\nreference   %+v, %v", body, got, gotErr, want, wantErr)
		}
	})
}

func FuzzObjectMembersMatchesReference(f *testing.F) {
	for _, b := range seeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		members, err := ObjectMembers(body)
		var raw map[string]json.RawMessage
		refErr := refDecodeJSON(body, &raw)
		if refErr != nil || raw == nil {
			if err == nil {
				t.Fatalf("ObjectMembers(%q) = %v, but the reference refuses it: %v", body, members, refErr)
			}
			return
		}
		if err != nil || len(members) != len(raw) {
			t.Fatalf("ObjectMembers(%q) = %v, %v; reference %v", body, members, err, raw)
		}
		for _, m := range members {
			if v, ok := raw[m.Key]; !ok || !bytes.Equal(v, m.Value) {
				t.Fatalf("ObjectMembers(%q): %q = %s, reference %s", body, m.Key, m.Value, v)
			}
			if s, ok := StringValue(m.Value); ok {
				var ref string
				if json.Unmarshal(m.Value, &ref) != nil || ref != s {
					t.Fatalf("StringValue(%s) = %q, reference %q", m.Value, s, ref)
				}
			}
		}
	})
}

// FuzzMarshalMatchesEncodingJSON holds Marshal to what encoding/json writes
// for the event, byte for byte, whatever the strings hold.
func FuzzMarshalMatchesEncodingJSON(f *testing.F) {
	f.Add("evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", "order.paid", "ada@example.com", "Book", "USD", int64(2), int64(2100), int64(1795860000), int64(0), int64(0))
	f.Add("<&>\u2028\u2029\x00\x1f\x7f\"\\", "\xff\xfe", "ä\tb\nc\rd\be\f", "\u00e9\U0001F4A5", "", int64(-1), int64(0), int64(-62135596800), int64(999999999), int64(-90))
	f.Add("", "", "", "", "", int64(0), int64(0), int64(253402300800), int64(1), int64(5*60+30))
	f.Fuzz(func(t *testing.T, id, typ, email, product, currency string, quantity, amount, unix, nanos, offsetMinutes int64) {
		loc := time.FixedZone("", int(offsetMinutes%(24*60))*60)
		e := OrderPaid{ID: id, Type: typ, Timestamp: time.Unix(unix, nanos%1_000_000_000).In(loc), Data: OrderData{
			OrderID: id + typ, CustomerEmail: email, ProductName: product, Quantity: quantity, AmountMinor: amount, Currency: currency,
		}}
		got, gotErr := e.Marshal()
		want, wantErr := json.Marshal(e)
		if (gotErr == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("Marshal(%+v) = %s, %v\nencoding/json  %s, %v", e, got, gotErr, want, wantErr)
		}
	})
}

// The checks of ids as they were, through a regular expression and the
// UUID parser, held to the hand-written ones.
var refIDPattern = regexp.MustCompile(`^evt_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func refValidOrderID(id string) bool {
	if len(id) != 36 {
		return false
	}
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

func FuzzValidIDsMatchReference(f *testing.F) {
	for _, id := range []string{
		"evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", "0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", "0193A5B2-7C1E-7D3A-9F00-1B2C3D4E5F60",
		"{0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f6}", "urn:uuid:0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", "0193a5b27c1e7d3a9f001b2c3d4e5f60",
		"0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f6g", "0193a5b2_7c1e-7d3a-9f00-1b2c3d4e5f60", "evt_", "", "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60\n",
	} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := ValidEventID(id), refIDPattern.MatchString(id); got != want {
			t.Fatalf("ValidEventID(%q) = %v, reference %v", id, got, want)
		}
		if got, want := ValidOrderID(id), refValidOrderID(id); got != want {
			t.Fatalf("ValidOrderID(%q) = %v, reference %v", id, got, want)
		}
	})
}

// FuzzPlainIDMatchesUnmarshal holds PlainID to encoding/json: whatever it
// accepts, Unmarshal reads as the same id.
func FuzzPlainIDMatchesUnmarshal(f *testing.F) {
	for _, b := range seeds(f) {
		f.Add(b)
	}
	for _, b := range []string{
		`{"id":"evt_1","type":"webhook.test","data":{"a":[1,-2.5e+3,true,false,null,{"b":[]}],"c":{}}}`,
		`{"ID":"x","id":"y"}`, `{"iD":"x"}`, `{"id":"x","id":"y"}`, `{"ıd":"x"}`, `{"id":"x","a":01}`, `{"id":"x","a":1.}`,
		`{"id":"x","a":-}`, `{"id":"x","a":1e}`, `{"id":"x","a":[1,]}`, `{"id":"x","a":tru}`, `{"id":"x","a":nulls}`,
		`{"id":"x"`, `{"a":1}`, `{"id":5}`, `{"id":"a\"b"}`, `[{"id":"x"}]`, `{"id":"x"} {}`,
		`{"id":"x","a":` + strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40) + `}`,
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		id, ok := PlainID(body)
		if !ok {
			return
		}
		var head struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body, &head); err != nil || head.ID != id {
			t.Fatalf("PlainID(%q) = %q, but encoding/json reads %q, %v", body, id, head.ID, err)
		}
	})
}
