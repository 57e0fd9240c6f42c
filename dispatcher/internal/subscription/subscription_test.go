package subscription_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/event"
)

var guard = ssrf.New(nil)

func TestDecodeCreate(t *testing.T) {
	f, err := subscription.DecodeCreate([]byte(`{"url":"https://hooks.example.com/in","event_types":["order.paid"],
		"description":"Shop ünd Co","rate_limit_per_s":5,"max_in_flight":2,"metadata":{"team":"billing"}}`), guard)
	if err != nil {
		t.Fatal(err)
	}
	now := subscription.Now()
	s := subscription.New("sub_x", f, now)
	if s.URL != "https://hooks.example.com/in" || !slices.Equal(s.EventTypes, []string{"order.paid"}) ||
		s.Description != "Shop ünd Co" || s.RateLimitPerS != 5 || s.MaxInFlight != 2 || s.Metadata["team"] != "billing" ||
		s.Status != subscription.StatusEnabled || s.DisabledReason != "" || !s.CreatedAt.Equal(now) || !s.UpdatedAt.Equal(now) {
		t.Fatalf("New = %+v", s)
	}

	f, err = subscription.DecodeCreate([]byte(`{"url":"https://a.example/x","event_types":["*"],"description":null,"metadata":null,"rate_limit_per_s":null}`), guard)
	if err != nil {
		t.Fatal(err)
	}
	s = subscription.New("sub_y", f, now)
	if s.RateLimitPerS != subscription.DefaultRateLimitPerS || s.MaxInFlight != subscription.DefaultMaxInFlight ||
		s.Description != "" || s.Metadata == nil || len(s.Metadata) != 0 {
		t.Fatalf("defaults: %+v", s)
	}
	if got := s.Filters(); !slices.Equal(got, []string{"orders.>"}) {
		t.Errorf("Filters(*) = %v", got)
	}
}

func TestDecodeRefuses(t *testing.T) {
	const ok = `"url":"https://hooks.example.com/in","event_types":["order.paid"]`
	tests := []struct {
		name   string
		body   string
		patch  bool
		syntax bool              // want an *event.SyntaxError (400)
		fields map[string]string // field → substring of its message (422)
	}{
		{name: "empty body", body: ``, syntax: true},
		{name: "truncated", body: `{"url":`, syntax: true},
		{name: "not JSON", body: `url=https://x`, syntax: true},
		{name: "trailing data", body: `{` + ok + `} {}`, syntax: true},
		{name: "duplicate key", body: `{` + ok + `,"url":"https://evil.example/"}`, syntax: true},
		{name: "duplicate key in metadata", body: `{` + ok + `,"metadata":{"a":"1","a":"2"}}`, syntax: true},
		{name: "invalid UTF-8", body: "{\"url\":\"https://x.example/\xff\",\"event_types\":[\"order.paid\"]}", syntax: true},
		{name: "array", body: `[]`, fields: map[string]string{"body": "must be a JSON object"}},
		{name: "null", body: `null`, fields: map[string]string{"body": "must be a JSON object"}},
		{name: "string", body: `"hello"`, fields: map[string]string{"body": "must be a JSON object"}},
		{name: "missing required", body: `{}`, fields: map[string]string{"url": "is required", "event_types": "is required"}},
		{name: "unknown field", body: `{` + ok + `,"colour":"red"}`, fields: map[string]string{"colour": "is not a known field"}},
		{name: "server fields", body: `{` + ok + `,"id":"sub_x","status":"enabled","secret":"whsec_x"}`,
			fields: map[string]string{"id": "is set by the server", "status": "enable", "secret": "rotate"}},
		{name: "hostile field name", body: `{` + ok + `,"` + strings.Repeat("k", 100) + `":1}`, fields: map[string]string{"(an unknown field)": "is not a known field"}},
		{name: "url not a string", body: `{"url":42,"event_types":["order.paid"]}`, fields: map[string]string{"url": "must be a string"}},
		{name: "url ftp", body: `{"url":"ftp://x.example/","event_types":["order.paid"]}`, fields: map[string]string{"url": "http or https"}},
		{name: "url refused address", body: `{"url":"http://169.254.169.254/","event_types":["order.paid"]}`, fields: map[string]string{"url": "refused address 169.254.169.254"}},
		{name: "url with password", body: `{"url":"https://u:p@x.example/","event_types":["order.paid"]}`, fields: map[string]string{"url": "password"}},
		{name: "event types not an array", body: `{"url":"https://x.example/","event_types":"order.paid"}`, fields: map[string]string{"event_types": "must be an array"}},
		{name: "event types empty", body: `{"url":"https://x.example/","event_types":[]}`, fields: map[string]string{"event_types": "at least one"}},
		{name: "event type unknown", body: `{"url":"https://x.example/","event_types":["order.shipped"]}`, fields: map[string]string{"event_types": "item 1 is not a known event type; known: *, order.paid"}},
		{name: "event type not a string", body: `{"url":"https://x.example/","event_types":[1]}`, fields: map[string]string{"event_types": "item 1 must be a string"}},
		{name: "event type twice", body: `{"url":"https://x.example/","event_types":["order.paid","order.paid"]}`, fields: map[string]string{"event_types": "item 2 repeats"}},
		{name: "star with another", body: `{"url":"https://x.example/","event_types":["*","order.paid"]}`, fields: map[string]string{"event_types": "stands alone"}},
		{name: "description number", body: `{` + ok + `,"description":7}`, fields: map[string]string{"description": "must be a string"}},
		{name: "description too long", body: `{` + ok + `,"description":"` + strings.Repeat("é", 501) + `"}`, fields: map[string]string{"description": "at most 500 characters"}},
		{name: "description control character", body: `{` + ok + `,"description":"a\u001bb"}`, fields: map[string]string{"description": "control characters"}},
		{name: "rate zero", body: `{` + ok + `,"rate_limit_per_s":0}`, fields: map[string]string{"rate_limit_per_s": "between 1 and 10000"}},
		{name: "rate too high", body: `{` + ok + `,"rate_limit_per_s":10001}`, fields: map[string]string{"rate_limit_per_s": "between 1 and 10000"}},
		{name: "rate fraction", body: `{` + ok + `,"rate_limit_per_s":1.5}`, fields: map[string]string{"rate_limit_per_s": "integer"}},
		{name: "rate exponent", body: `{` + ok + `,"rate_limit_per_s":1e2}`, fields: map[string]string{"rate_limit_per_s": "integer"}},
		{name: "rate string", body: `{` + ok + `,"rate_limit_per_s":"5"}`, fields: map[string]string{"rate_limit_per_s": "integer"}},
		{name: "rate huge", body: `{` + ok + `,"rate_limit_per_s":99999999999999999999999}`, fields: map[string]string{"rate_limit_per_s": "integer"}},
		{name: "in flight negative", body: `{` + ok + `,"max_in_flight":-1}`, fields: map[string]string{"max_in_flight": "between 1 and 256"}},
		{name: "in flight bool", body: `{` + ok + `,"max_in_flight":true}`, fields: map[string]string{"max_in_flight": "integer"}},
		{name: "metadata array", body: `{` + ok + `,"metadata":["a"]}`, fields: map[string]string{"metadata": "object of strings"}},
		{name: "metadata number value", body: `{` + ok + `,"metadata":{"a":1}}`, fields: map[string]string{"metadata": `value of "a" must be a string`}},
		{name: "metadata long key", body: `{` + ok + `,"metadata":{"` + strings.Repeat("k", 41) + `":"v"}}`, fields: map[string]string{"metadata": "keys must be 1 to 40"}},
		{name: "metadata long value", body: `{` + ok + `,"metadata":{"a":"` + strings.Repeat("v", 501) + `"}}`, fields: map[string]string{"metadata": "at most 500"}},
		{name: "metadata empty key", body: `{` + ok + `,"metadata":{"":"v"}}`, fields: map[string]string{"metadata": "keys must be 1 to 40"}},
		{name: "metadata too many keys", body: `{` + ok + `,"metadata":{` + manyKeys(51) + `}}`, fields: map[string]string{"metadata": "at most 50 keys"}},
		{name: "every error at once", body: `{"url":1,"event_types":{},"max_in_flight":0,"x":1}`,
			fields: map[string]string{"url": "string", "event_types": "array", "max_in_flight": "between", "x": "not a known"}},

		{name: "patch null url", patch: true, body: `{"url":null}`, fields: map[string]string{"url": "cannot be null"}},
		{name: "patch null event types", patch: true, body: `{"event_types":null}`, fields: map[string]string{"event_types": "cannot be null"}},
		{name: "patch status", patch: true, body: `{"status":"disabled"}`, fields: map[string]string{"status": "enable"}},
		{name: "patch unknown", patch: true, body: `{"urls":"https://x.example/"}`, fields: map[string]string{"urls": "not a known field"}},
		{name: "patch duplicate", patch: true, body: `{"description":"a","description":"b"}`, syntax: true},
		{name: "patch array", patch: true, body: `[{"description":"a"}]`, fields: map[string]string{"body": "JSON object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			decode := subscription.DecodeCreate
			if tt.patch {
				decode = subscription.DecodePatch
			}
			_, err := decode([]byte(tt.body), guard)
			var se *event.SyntaxError
			var ve *event.ValidationError
			switch {
			case tt.syntax:
				if !errors.As(err, &se) {
					t.Fatalf("err = %v (%T), want a SyntaxError", err, err)
				}
			case !errors.As(err, &ve):
				t.Fatalf("err = %v (%T), want a ValidationError", err, err)
			default:
				for field, want := range tt.fields {
					if !strings.Contains(ve.Fields[field], want) {
						t.Errorf("errors[%q] = %q, want it to contain %q (all: %v)", field, ve.Fields[field], want, ve.Fields)
					}
				}
				if len(ve.Fields) != len(tt.fields) {
					t.Errorf("errors = %v, want exactly the fields %v", ve.Fields, tt.fields)
				}
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("x", i) + `":"v"`)
	}
	return b.String()
}

func TestPatchApply(t *testing.T) {
	created := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	f, err := subscription.DecodeCreate([]byte(`{"url":"https://a.example/x","event_types":["order.paid"],"description":"d","rate_limit_per_s":7,"metadata":{"a":"1","b":"2"}}`), guard)
	if err != nil {
		t.Fatal(err)
	}
	s := subscription.New("sub_x", f, created)

	later := created.Add(time.Hour)
	p, err := subscription.DecodePatch([]byte(`{}`), guard)
	if err != nil || !p.Empty() {
		t.Fatalf("empty patch: %v, %+v", err, p)
	}
	if s.Apply(p, later) || !s.UpdatedAt.Equal(created) {
		t.Fatal("an empty patch changed the subscription")
	}
	p, _ = subscription.DecodePatch([]byte(`{"description":"d","rate_limit_per_s":7}`), guard)
	if s.Apply(p, later) {
		t.Fatal("a patch to the same values counted as a change")
	}
	p, err = subscription.DecodePatch([]byte(`{"metadata":{"c":"3"},"description":null,"rate_limit_per_s":null,"event_types":["*"]}`), guard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Apply(p, later) {
		t.Fatal("a patch with changes reported none")
	}
	if s.Description != "" || s.RateLimitPerS != subscription.DefaultRateLimitPerS || len(s.Metadata) != 1 || s.Metadata["c"] != "3" ||
		!slices.Equal(s.EventTypes, []string{"*"}) || s.URL != "https://a.example/x" || !s.UpdatedAt.Equal(later) || !s.CreatedAt.Equal(created) {
		t.Fatalf("after patch: %+v", s)
	}
}

func TestSetStatus(t *testing.T) {
	s := subscription.New("sub_x", subscription.Fields{}, subscription.Now())
	later := s.CreatedAt.Add(time.Minute)
	if s.SetStatus(subscription.StatusEnabled, "", later) {
		t.Error("enabling an enabled subscription counted as a change")
	}
	if !s.SetStatus(subscription.StatusDisabled, subscription.ReasonGone, later) || s.DisabledReason != subscription.ReasonGone || !s.UpdatedAt.Equal(later) {
		t.Errorf("disable: %+v", s)
	}
	if !s.SetStatus(subscription.StatusPaused, subscription.ReasonGone, later) || s.DisabledReason != "" {
		t.Errorf("a paused subscription keeps a disabled_reason: %+v", s)
	}
}

func TestIDs(t *testing.T) {
	id, err := subscription.NewID()
	if err != nil {
		t.Fatal(err)
	}
	next, _ := subscription.NewID()
	if !subscription.ValidID(id) || !strings.HasPrefix(id, "sub_") || next <= id {
		t.Fatalf("NewID = %q then %q: want valid, sortable ids", id, next)
	}
	for _, bad := range []string{"", "sub_", "sub_notifier2", "SUB_" + id[4:], "sub_" + strings.ToUpper(id[4:]),
		"sub_0193c6e4-5b1e-4b7e-8d6a-1f2e3d4c5b6a", // a UUIDv4
		id + "x", "evt_" + id[4:], "sub_../../etc", "sub_*", "sub_a.b"} {
		if subscription.ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
	if !subscription.ValidID(subscription.NotifierID) {
		t.Error("the notifier's id is not valid")
	}
}

func TestFilters(t *testing.T) {
	if got := subscription.Filters([]string{"order.paid"}); !slices.Equal(got, []string{"orders.paid.>"}) {
		t.Errorf("Filters(order.paid) = %v", got)
	}
	if got := subscription.Filters([]string{"*"}); !slices.Equal(got, []string{"orders.>"}) {
		t.Errorf("Filters(*) = %v", got)
	}
	if got := subscription.EventTypes(); !slices.Equal(got, []string{"*", "order.paid"}) {
		t.Errorf("EventTypes = %v", got)
	}
}
