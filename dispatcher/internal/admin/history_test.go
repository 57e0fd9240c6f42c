package admin_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

type attemptJSON struct {
	SubscriptionID string     `json:"subscription_id"`
	EventID        string     `json:"event_id"`
	Attempt        uint64     `json:"attempt"`
	StartedAt      time.Time  `json:"started_at"`
	DurationMS     int64      `json:"duration_ms"`
	Status         int        `json:"status"`
	Outcome        string     `json:"outcome"`
	Error          string     `json:"error"`
	Response       string     `json:"response"`
	NextRetryAt    *time.Time `json:"next_retry_at"`
	Source         string     `json:"source"`
}

type listOf[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// pages follows next_cursor from path and returns every item, checking
// that no page holds more than limit.
func pages[T any](a *api, path string, limit int) []T {
	a.t.Helper()
	var all []T
	sep := "?"
	if bytes.ContainsRune([]byte(path), '?') {
		sep = "&"
	}
	next := path + sep + fmt.Sprintf("limit=%d", limit)
	for n := 0; ; n++ {
		r := a.do(request{method: "GET", path: next})
		p := decode[listOf[T]](a.t, r, 200)
		if p.Data == nil || len(p.Data) > limit {
			a.t.Fatalf("page %s: %s", next, r.body)
		}
		all = append(all, p.Data...)
		if p.NextCursor == nil {
			if !bytes.Contains(r.body, []byte(`"next_cursor":null`)) {
				a.t.Fatalf("last page without next_cursor null: %s", r.body)
			}
			return all
		}
		if n > 100 {
			a.t.Fatal("the pages never end")
		}
		next = path + sep + fmt.Sprintf("limit=%d&cursor=%s", limit, *p.NextCursor)
	}
}

// TestAttemptsNewestFirst: a subscription's attempts and an event's, by
// page, newest first, filtered by event and outcome; a deleted
// subscription's stay readable, an unknown one is a 404.
func TestAttemptsNewestFirst(t *testing.T) {
	a := startAPI(t)
	s1, _ := a.create(validBody)
	s2, _ := a.create(validBody)
	log := attempt.NewLog(a.js, slog.New(slog.DiscardHandler))
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	var records []attempt.Record
	for i := range 24 {
		r := attempt.Record{SubscriptionID: []string{s1.ID, s2.ID}[i%2], EventID: fmt.Sprintf("evt_%d", i%4),
			Attempt: uint64(i/4 + 1), StartedAt: start.Add(time.Duration(i) * time.Second), DurationMS: int64(i),
			Status: 503, Outcome: attempt.OutcomeRetry, Error: "receiver answered 503 Service Unavailable",
			Response: "busy", Source: attempt.SourceEvent, AckFloor: 7, StreamSeq: 9}
		next := r.StartedAt.Add(time.Minute)
		r.NextRetryAt = &next
		if i%3 == 0 {
			r.Status, r.Outcome, r.Error, r.NextRetryAt = 200, attempt.OutcomeDelivered, "", nil
		}
		records = append(records, r)
		log.Add(r)
	}
	testkit.Eventually(t, 10*time.Second, "the attempt records", func() bool {
		return a.env.Count(t, natsx.StreamAttempts, "attempts.>") == 24
	})
	want := func(keep func(attempt.Record) bool) []time.Time {
		var out []time.Time
		for i := len(records) - 1; i >= 0; i-- {
			if keep(records[i]) {
				out = append(out, records[i].StartedAt)
			}
		}
		return out
	}
	times := func(list []attemptJSON) []time.Time {
		var out []time.Time
		for _, r := range list {
			out = append(out, r.StartedAt)
		}
		return out
	}
	for _, tt := range []struct {
		path string
		keep func(attempt.Record) bool
	}{
		{"/v1/subscriptions/" + s1.ID + "/attempts", func(r attempt.Record) bool { return r.SubscriptionID == s1.ID }},
		{"/v1/subscriptions/" + s1.ID + "/attempts?event_id=evt_2", func(r attempt.Record) bool { return r.SubscriptionID == s1.ID && r.EventID == "evt_2" }},
		{"/v1/subscriptions/" + s2.ID + "/attempts?outcome=delivered", func(r attempt.Record) bool {
			return r.SubscriptionID == s2.ID && r.Outcome == attempt.OutcomeDelivered
		}},
		{"/v1/events/evt_1/attempts", func(r attempt.Record) bool { return r.EventID == "evt_1" }},
		{"/v1/events/evt_3/attempts?outcome=retry", func(r attempt.Record) bool { return r.EventID == "evt_3" && r.Outcome == attempt.OutcomeRetry }},
		{"/v1/events/evt_unknown/attempts", func(attempt.Record) bool { return false }},
	} {
		t.Run(tt.path, func(t *testing.T) {
			a.t = t
			if got, w := times(pages[attemptJSON](a, tt.path, 5)), want(tt.keep); !slices.EqualFunc(got, w, time.Time.Equal) {
				t.Fatalf("got %v\nwant %v", got, w)
			}
		})
	}
	a.t = t

	// One answer field by field: the record without its bookkeeping.
	r := a.do(request{method: "GET", path: "/v1/subscriptions/" + s2.ID + "/attempts?limit=1"})
	got := decode[listOf[attemptJSON]](t, r, 200).Data[0]
	last := records[23]
	if got.SubscriptionID != s2.ID || got.EventID != last.EventID || got.Attempt != last.Attempt || !got.StartedAt.Equal(last.StartedAt) ||
		got.DurationMS != 23 || got.Status != 503 || got.Outcome != "retry" || got.Error != last.Error || got.Response != "busy" ||
		got.NextRetryAt == nil || !got.NextRetryAt.Equal(*last.NextRetryAt) || got.Source != "event" ||
		bytes.Contains(r.body, []byte("ack_floor")) || bytes.Contains(r.body, []byte("stream_seq")) {
		t.Fatalf("attempt %s", r.body)
	}

	// Deleted: the attempts stay until they age out.
	if r := a.do(request{method: "DELETE", path: "/v1/subscriptions/" + s1.ID}); r.status != 204 {
		t.Fatalf("DELETE = %d", r.status)
	}
	if n := len(pages[attemptJSON](a, "/v1/subscriptions/"+s1.ID+"/attempts", 50)); n != 12 {
		t.Fatalf("%d attempts of the deleted subscription, want 12", n)
	}
	// Never was, or has nothing: 404.
	unknown := "/v1/subscriptions/sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60/attempts"
	if r := a.do(request{method: "GET", path: unknown}); r.status != 404 {
		t.Fatalf("attempts of an unknown subscription = %d %s", r.status, r.body)
	}
	// A subscription without attempts has an empty list.
	s3, _ := a.create(validBody)
	if p := decode[listOf[attemptJSON]](t, a.do(request{method: "GET", path: "/v1/subscriptions/" + s3.ID + "/attempts"}), 200); len(p.Data) != 0 || p.NextCursor != nil {
		t.Fatalf("attempts of a new subscription: %+v", p)
	}
}

type deadLetterJSON struct {
	EventID        string    `json:"event_id"`
	Subject        string    `json:"subject"`
	Attempts       int       `json:"attempts"`
	LastStatus     int       `json:"last_status"`
	LastError      string    `json:"last_error"`
	Reason         string    `json:"reason"`
	DeadLetteredAt time.Time `json:"dead_lettered_at"`
}

// TestDeadLettersAndReplay: a subscription's dead letters are listed,
// replayed some then all, each once, and stay readable (not replayable)
// once the subscription is deleted.
func TestDeadLettersAndReplay(t *testing.T) {
	a := startAPI(t)
	s, _ := a.create(validBody)
	other, _ := a.create(validBody)
	events := platformtest.Events(t, 5)
	a.env.DeadLetter(t, s.ID, events...)
	a.env.DeadLetter(t, other.ID, platformtest.Events(t, 2)...)
	path := "/v1/subscriptions/" + s.ID + "/dead-letters"

	list := pages[deadLetterJSON](a, path, 2)
	if len(list) != 5 {
		t.Fatalf("%d dead letters, want 5", len(list))
	}
	var ids []string
	for _, e := range events {
		ids = append(ids, e.ID)
	}
	for _, l := range list {
		if !slices.Contains(ids, l.EventID) || l.Subject == "" || l.Attempts != 15 || l.LastStatus != 503 ||
			l.LastError == "" || l.Reason != "max_deliveries" || l.DeadLetteredAt.IsZero() {
			t.Fatalf("dead letter %+v", l)
		}
	}

	replay := func(body string) int {
		t.Helper()
		r := a.do(request{method: "POST", path: path + "/replay", body: body})
		v := decode[struct {
			Replayed *int `json:"replayed"`
		}](t, r, 202)
		if v.Replayed == nil {
			t.Fatalf("replay answered %s", r.body)
		}
		return *v.Replayed
	}
	if n := replay(`{"event_ids":["` + events[0].ID + `","` + events[3].ID + `"]}`); n != 2 {
		t.Fatalf("replayed %d of 2", n)
	}
	if n := len(pages[deadLetterJSON](a, path, 50)); n != 3 {
		t.Fatalf("%d dead letters left, want 3", n)
	}
	if n := replay(`{}`); n != 3 {
		t.Fatalf("replayed %d of the 3 left", n)
	}
	if n := replay(`{}`); n != 0 {
		t.Fatalf("a second replay replayed %d", n)
	}
	if n := a.env.Count(t, natsx.StreamRedeliveries, natsx.RedeliverSubject(s.ID, ">")); n != 5 {
		t.Fatalf("%d redeliveries for %s, want 5", n, s.ID)
	}
	if n := len(pages[deadLetterJSON](a, "/v1/subscriptions/"+other.ID+"/dead-letters", 50)); n != 2 {
		t.Fatalf("the other subscription has %d dead letters, want its 2", n)
	}

	// Deleted: its dead letters stay readable; a replay has no one to
	// deliver to.
	if r := a.do(request{method: "DELETE", path: "/v1/subscriptions/" + other.ID}); r.status != 204 {
		t.Fatal(r.status)
	}
	if n := len(pages[deadLetterJSON](a, "/v1/subscriptions/"+other.ID+"/dead-letters", 50)); n != 2 {
		t.Fatalf("the deleted subscription shows %d dead letters, want 2", n)
	}
	if r := a.do(request{method: "POST", path: "/v1/subscriptions/" + other.ID + "/dead-letters/replay", body: `{}`}); r.status != 404 {
		t.Fatalf("replay of a deleted subscription = %d", r.status)
	}
	if r := a.do(request{method: "GET", path: "/v1/subscriptions/sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60/dead-letters"}); r.status != 404 {
		t.Fatalf("dead letters of an unknown subscription = %d", r.status)
	}
}
