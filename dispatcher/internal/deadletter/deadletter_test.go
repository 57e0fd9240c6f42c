package deadletter_test

import (
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/deadletter"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/dispatcher/internal/redeliver"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/tracing"
)

const (
	subA = "sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"
	subB = "sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61"
)

func store(e *platformtest.Env) *deadletter.Store {
	return deadletter.New(e.JS, slog.New(slog.DiscardHandler))
}

func ids(events []event.OrderPaid) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.ID)
	}
	return out
}

// TestPageNewestFirst: a subscription's dead letters, newest first, with
// what the headers say, and only its own.
func TestPageNewestFirst(t *testing.T) {
	e := platformtest.Start(t)
	evA := platformtest.Events(t, 5)
	e.DeadLetter(t, subA, evA...)
	e.DeadLetter(t, subB, platformtest.Events(t, 3)...)
	s := store(e)

	var got []deadletter.Letter
	var before uint64
	for pages := 0; ; pages++ {
		p, err := s.Page(platformtest.Ctx(t), subA, before, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Letters...)
		if p.Next == 0 {
			break
		}
		if pages > 5 {
			t.Fatal("the pages never end")
		}
		before = p.Next
	}
	if len(got) != 5 {
		t.Fatalf("%d dead letters of %s, want 5", len(got), subA)
	}
	// One worker dead-letters them in turn: newest first is by the time
	// each was dead-lettered.
	for i, l := range got {
		if !slices.Contains(ids(evA), l.EventID) || l.Attempts != 15 || l.LastStatus != 503 ||
			l.LastError != "receiver answered 503 Service Unavailable" || l.Reason != "max_deliveries" ||
			time.Since(l.DeadLetteredAt) > time.Minute || l.Subject[:len("orders.paid.")] != "orders.paid." {
			t.Fatalf("dead letter %d: %+v", i, l)
		}
		if i > 0 && l.DeadLetteredAt.After(got[i-1].DeadLetteredAt) {
			t.Fatalf("not newest first: %v after %v", l.DeadLetteredAt, got[i-1].DeadLetteredAt)
		}
	}
	p, err := s.Page(platformtest.Ctx(t), "sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f62", 0, 50)
	if err != nil || len(p.Letters) != 0 || p.Next != 0 {
		t.Fatalf("a subscription without dead letters: %+v, %v", p, err)
	}
}

// TestReplayOnce: a replay enqueues each dead letter of the subscription
// to REDELIVERIES once, as the redelivery contract says, and removes it
// from DEADLETTER; asked again, it finds nothing; another subscription's
// dead letters are left alone.
func TestReplayOnce(t *testing.T) {
	e := platformtest.Start(t)
	evA := platformtest.Events(t, 4)
	orderSeqs := e.DeadLetter(t, subA, evA...)
	e.DeadLetter(t, subB, platformtest.Events(t, 2)...)
	s := store(e)

	n, err := s.Replay(platformtest.Ctx(t), subA, nil)
	if err != nil || n != 4 {
		t.Fatalf("Replay = %d, %v; want 4", n, err)
	}
	msgs := e.Redeliveries(t)
	if len(msgs) != 4 {
		t.Fatalf("%d redeliveries, want 4", len(msgs))
	}
	for _, m := range msgs {
		sub, evID, ok := redeliver.Parse(m.Subject)
		i := slices.Index(ids(evA), evID)
		if !ok || sub != subA || i < 0 {
			t.Fatalf("redelivery on %s", m.Subject)
		}
		body, _ := evA[i].Marshal()
		h := m.Header
		if string(m.Data) != string(body) ||
			h.Get(consume.HeaderOriginalSubject) != event.Subject(evA[i].Data.OrderID) ||
			h.Get(consume.HeaderOriginalStream) != natsx.StreamOrders ||
			h.Get(consume.HeaderOriginalSequence) != strconv.FormatUint(orderSeqs[i], 10) ||
			h.Get(consume.HeaderEventID) != evID || h.Get(redeliver.HeaderSource) != "replay" ||
			h.Get(redeliver.HeaderJob) != "" || h.Get(jetstream.MsgIDHeader) == "" ||
			h.Get(tracing.HeaderTraceparent) != platformtest.Traceparent(evA[i]) {
			t.Fatalf("redelivery %s: headers %v body %s", m.Subject, h, m.Data)
		}
	}
	if left := e.Count(t, natsx.StreamDeadletter, natsx.DeadletterFilter(subA)); left != 0 {
		t.Fatalf("%d dead letters of %s left after the replay", left, subA)
	}
	if left := e.Count(t, natsx.StreamDeadletter, natsx.DeadletterFilter(subB)); left != 2 {
		t.Fatalf("%s has %d dead letters, want its 2", subB, left)
	}
	if n, err := s.Replay(platformtest.Ctx(t), subA, nil); err != nil || n != 0 {
		t.Fatalf("second Replay = %d, %v; want 0", n, err)
	}
	if got := len(e.Redeliveries(t)); got != 4 {
		t.Fatalf("%d redeliveries after the second replay, want 4", got)
	}
}

// TestReplaySome: only the events named are replayed; the others stay.
func TestReplaySome(t *testing.T) {
	e := platformtest.Start(t)
	evA := platformtest.Events(t, 3)
	e.DeadLetter(t, subA, evA...)
	n, err := store(e).Replay(platformtest.Ctx(t), subA, []string{evA[1].ID, "evt_0193a5b2-7c1e-7d3a-9f00-000000000000"})
	if err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	msgs := e.Redeliveries(t)
	if len(msgs) != 1 || msgs[0].Subject != natsx.RedeliverSubject(subA, evA[1].ID) {
		t.Fatalf("redeliveries %v", msgs)
	}
	if left := e.Count(t, natsx.StreamDeadletter, natsx.DeadletterFilter(subA)); left != 2 {
		t.Fatalf("%d dead letters left, want 2", left)
	}
}

// TestReplayTwiceAtOnce: two replays of the same subscription at the same
// time enqueue each dead letter once between them.
func TestReplayTwiceAtOnce(t *testing.T) {
	e := platformtest.Start(t)
	e.DeadLetter(t, subA, platformtest.Events(t, 60)...)
	s := store(e)
	s.Batch = 7
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i := range counts {
		wg.Go(func() {
			n, err := s.Replay(platformtest.Ctx(t), subA, nil)
			if err != nil {
				t.Error(err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	if counts[0]+counts[1] != 60 {
		t.Fatalf("replays counted %v, want 60 between them", counts)
	}
	if got := len(e.Redeliveries(t)); got != 60 {
		t.Fatalf("%d redeliveries, want 60", got)
	}
}

// TestReplayAfterACrash: a replay that died after its redelivery was
// enqueued, but before the dead letter was deleted, is finished by the
// next one without enqueueing it again.
func TestReplayAfterACrash(t *testing.T) {
	e := platformtest.Start(t)
	ev := platformtest.Events(t, 2)
	e.DeadLetter(t, subA, ev...)
	// What the crashed replay enqueued: the redelivery of the first dead
	// letter, under the message id a replay gives it.
	dl, err := e.JS.Stream(platformtest.Ctx(t), natsx.StreamDeadletter)
	if err != nil {
		t.Fatal(err)
	}
	first, err := dl.GetMsg(platformtest.Ctx(t), 1, jetstream.WithGetMsgSubject(natsx.DeadletterFilter(subA)))
	if err != nil {
		t.Fatal(err)
	}
	evID := first.Header.Get(consume.HeaderEventID)
	crashed := redeliver.Message(subA, evID, first.Data, redeliver.Origin{}, "replay", "", "replay:"+subA+":"+strconv.FormatUint(first.Sequence, 10))
	if _, err := e.JS.PublishMsg(platformtest.Ctx(t), crashed); err != nil {
		t.Fatal(err)
	}
	n, err := store(e).Replay(platformtest.Ctx(t), subA, nil)
	if err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v; want 1 (the other was enqueued already)", n, err)
	}
	msgs := e.Redeliveries(t)
	if len(msgs) != 2 || msgs[0].Subject == msgs[1].Subject {
		t.Fatalf("redeliveries %v, want one per dead letter", msgs)
	}
	if left := e.Count(t, natsx.StreamDeadletter, natsx.DeadletterFilter(subA)); left != 0 {
		t.Fatalf("%d dead letters left", left)
	}
}

// TestReplayKeepsWhatIsNoEvent: a dead letter whose body is not an event
// cannot be redelivered; it stays in DEADLETTER.
func TestReplayKeepsWhatIsNoEvent(t *testing.T) {
	e := platformtest.Start(t)
	ev := platformtest.Events(t, 1)
	e.DeadLetter(t, subA, ev...)
	junk := &nats.Msg{Subject: natsx.DeadletterSubject(subA, "orders.paid.bogus"), Data: []byte("not json"),
		Header: nats.Header{consume.HeaderOriginalSubject: {"orders.paid.bogus"}, consume.HeaderReason: {"permanent"}}}
	if _, err := e.JS.PublishMsg(platformtest.Ctx(t), junk); err != nil {
		t.Fatal(err)
	}
	n, err := store(e).Replay(platformtest.Ctx(t), subA, nil)
	if err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	if left := e.Count(t, natsx.StreamDeadletter, natsx.DeadletterFilter(subA)); left != 1 {
		t.Fatalf("%d dead letters left, want the one that is no event", left)
	}
}
