package subscription_test

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/event"
)

// FuzzDecode: any body either yields a typed error (400 or 422, the latter
// naming at least one field) or fields that make a subscription meeting
// every rule, and that subscription's fields, encoded again, decode to
// the same subscription. It never panics. Patch bodies obey the same.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"url":"https://hooks.example.com/in","event_types":["order.paid"]}`,
		`{"url":"http://93.184.215.14:8080/x?y=1","event_types":["*"],"description":"Ünïcode","rate_limit_per_s":10000,"max_in_flight":1,"metadata":{"team":"billing"}}`,
		`{"url":"http://127.0.0.1/","event_types":["order.paid","order.paid"]}`,
		`{"url":"https://a.example/","event_types":["order.paid"],"metadata":{"a":"1","a":"2"}}`,
		`{"url":null,"event_types":null,"description":null,"metadata":null,"rate_limit_per_s":null}`,
		`{"rate_limit_per_s":1e2,"max_in_flight":-0}`,
		`{"status":"disabled","id":"sub_x"}`,
		`[]`, `null`, `{}`, `{"a":`, `"x"`,
	} {
		f.Add([]byte(seed))
	}
	guard := guard
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, decode := range []func([]byte, subscription.URLChecker) (subscription.Fields, error){subscription.DecodeCreate, subscription.DecodePatch} {
			fields, err := decode(body, guard)
			if err != nil {
				var se *event.SyntaxError
				var ve *event.ValidationError
				if !errors.As(err, &se) && !errors.As(err, &ve) {
					t.Fatalf("untyped error %T: %v", err, err)
				}
				if ve != nil && len(ve.Fields) == 0 {
					t.Fatal("ValidationError without fields")
				}
				continue
			}
			s := subscription.New("sub_x", fields, subscription.Now())
			check(t, s)
			if s.URL == "" || len(s.EventTypes) == 0 {
				continue // a patch naming neither is no whole subscription
			}
			again, err := subscription.DecodeCreate(writable(t, s), guard)
			if err != nil {
				t.Fatalf("re-decoding %+v: %v", s, err)
			}
			if back := subscription.New("sub_x", again, s.CreatedAt); !back.Equal(s) {
				t.Fatalf("round trip changed %+v into %+v", s, back)
			}
		}
	})
}

func check(t *testing.T, s subscription.Subscription) {
	t.Helper()
	if s.URL != "" && guard.CheckURL(s.URL) != nil {
		t.Fatalf("accepted URL %q", s.URL)
	}
	for _, et := range s.EventTypes {
		if !subscription.KnownEventType(et) {
			t.Fatalf("accepted event type %q", et)
		}
	}
	if len(subscription.Filters(s.EventTypes)) != len(s.EventTypes) {
		t.Fatalf("event types %v without a filter each", s.EventTypes)
	}
	if s.RateLimitPerS < 1 || s.RateLimitPerS > subscription.MaxRateLimitPerS || s.MaxInFlight < 1 || s.MaxInFlight > subscription.MaxMaxInFlight {
		t.Fatalf("accepted limits %d, %d", s.RateLimitPerS, s.MaxInFlight)
	}
	if utf8.RuneCountInString(s.Description) > subscription.MaxDescriptionLen || len(s.Metadata) > subscription.MaxMetadataKeys {
		t.Fatalf("accepted oversize description or metadata: %+v", s)
	}
	for k, v := range s.Metadata {
		if k == "" || utf8.RuneCountInString(k) > subscription.MaxMetadataKeyLen || utf8.RuneCountInString(v) > subscription.MaxMetadataValueLen {
			t.Fatalf("accepted metadata %q: %q", k, v)
		}
	}
}

// writable encodes the fields of s that a create body may set.
func writable(t *testing.T, s subscription.Subscription) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"url": s.URL, "event_types": s.EventTypes, "description": s.Description,
		"rate_limit_per_s": s.RateLimitPerS, "max_in_flight": s.MaxInFlight, "metadata": s.Metadata,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
