package attempt_test

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

const (
	subA = "sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"
	subB = "sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61"
)

// readAll pages through q and returns every record.
func readAll(t *testing.T, e *platformtest.Env, q attempt.Query) []attempt.Record {
	t.Helper()
	var out []attempt.Record
	for pages := 0; ; pages++ {
		p, err := attempt.Read(platformtest.Ctx(t), e.JS, q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Records...)
		if p.Next == 0 {
			return out
		}
		if pages > 100 {
			t.Fatal("the pages never end")
		}
		q.Before = p.Next
	}
}

// TestRead: the attempts the log holds come back newest first, by
// subscription, by event, by both, and by outcome; what is not a record
// is passed over.
func TestRead(t *testing.T) {
	e := platformtest.Start(t)
	log := attempt.NewLog(e.JS, slog.New(slog.DiscardHandler))
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	var all []attempt.Record
	for i := range 30 {
		r := attempt.Record{
			SubscriptionID: []string{subA, subB}[i%2], EventID: fmt.Sprintf("evt_%d", i%5),
			Attempt: uint64(i/5 + 1), StartedAt: start.Add(time.Duration(i) * time.Second), DurationMS: 3,
			Status: 503, Outcome: attempt.OutcomeRetry, Source: attempt.SourceEvent,
		}
		if i%3 == 0 {
			r.Status, r.Outcome = 200, attempt.OutcomeDelivered
		}
		all = append(all, r)
		log.Add(r)
		if i == 10 {
			// Not a record: skipped, never an error.
			if err := e.NC.PublishMsg(&nats.Msg{Subject: natsx.AttemptSubject(subA, "evt_0"), Data: []byte("{")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	testkit.Eventually(t, 10*time.Second, "the records", func() bool {
		return e.Count(t, natsx.StreamAttempts, "attempts.>") == 31
	})
	want := func(keep func(attempt.Record) bool) []time.Time {
		var out []time.Time
		for i := len(all) - 1; i >= 0; i-- {
			if keep(all[i]) {
				out = append(out, all[i].StartedAt)
			}
		}
		return out
	}
	for _, tt := range []struct {
		name string
		q    attempt.Query
		keep func(attempt.Record) bool
	}{
		{"subscription", attempt.Query{SubscriptionID: subA, Limit: 4}, func(r attempt.Record) bool { return r.SubscriptionID == subA }},
		{"event", attempt.Query{EventID: "evt_3", Limit: 2}, func(r attempt.Record) bool { return r.EventID == "evt_3" }},
		{"event of a subscription", attempt.Query{SubscriptionID: subB, EventID: "evt_1", Limit: 50},
			func(r attempt.Record) bool { return r.SubscriptionID == subB && r.EventID == "evt_1" }},
		{"outcome", attempt.Query{SubscriptionID: subA, Outcome: attempt.OutcomeDelivered, Limit: 3},
			func(r attempt.Record) bool { return r.SubscriptionID == subA && r.Outcome == attempt.OutcomeDelivered }},
		{"nothing", attempt.Query{SubscriptionID: subA, EventID: "evt_9", Limit: 3}, func(attempt.Record) bool { return false }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []time.Time
			for _, r := range readAll(t, e, tt.q) {
				got = append(got, r.StartedAt)
			}
			if w := want(tt.keep); !slices.EqualFunc(got, w, time.Time.Equal) {
				t.Fatalf("got %v\nwant %v", got, w)
			}
		})
	}
}

func TestValidEventID(t *testing.T) {
	for id, ok := range map[string]bool{
		"evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60": true, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W": true,
		"": false, "evt.1": false, "evt_*": false, "evt_>": false, "evt 1": false, "évt": false,
		string(make([]byte, 257)): false,
	} {
		if attempt.ValidEventID(id) != ok {
			t.Errorf("ValidEventID(%q) = %v", id, !ok)
		}
	}
}
