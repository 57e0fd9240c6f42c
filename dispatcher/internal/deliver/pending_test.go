package deliver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// failedCopies counts the deliveries of an event whose dead-letter copy
// could not be published.
func failedCopies(recs []map[string]any) int {
	n := 0
	for _, r := range recs {
		if msg, _ := r["settle_error"].(string); strings.Contains(msg, "publish dead-letter copy") {
			n++
		}
	}
	return n
}

// TestDeadLetterStreamDeletedUnderTheDispatcher: DEADLETTER vanishes while
// the dispatcher runs. The copy of the event that exhausted its attempts
// fails, so the event is kept (never terminated without its copy), the
// dispatcher provisions DEADLETTER again on its own, and the event is
// dead-lettered once, without another post to the receiver.
func TestDeadLetterStreamDeletedUnderTheDispatcher(t *testing.T) {
	t.Parallel()
	rc := &receiver{respond: status(http.StatusInternalServerError)}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.MaxDeliver = 2
	h := newHarness(t, set)
	h.start(t)
	eventually(t, 5*time.Second, "the dispatcher to provision its streams", func() bool {
		return strings.Contains(h.logs.String(), `"msg":"consuming"`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.js.DeleteStream(ctx, natsx.StreamDeadletter); err != nil {
		t.Fatal(err)
	}
	e, body := h.publish(t)

	eventually(t, 10*time.Second, "the event dead-lettered into the recreated DEADLETTER", func() bool {
		return len(h.deadLetters(t)) == 1 && h.consumerIdle(t)
	})
	if failedCopies(h.logs.attempts(e.ID)) == 0 {
		t.Error("no dead-letter copy failed: DEADLETTER was recreated before it was needed, the test proves nothing")
	}
	if n := len(rc.got()); n != set.MaxDeliver {
		t.Errorf("receiver got %d attempts, want MAX_DELIVER = %d", n, set.MaxDeliver)
	}
	dl := h.deadLetters(t)[0]
	if string(dl.Data) != string(body) {
		t.Errorf("dead-letter body %s, want %s", dl.Data, body)
	}
	// The copy is made on a delivery past MAX_DELIVER, which knows how
	// many attempts there were.
	for name, want := range map[string]string{
		consume.HeaderEventID:  e.ID,
		consume.HeaderAttempts: "2",
	} {
		if got := dl.Header.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	recs := h.logsUntil(t, e.ID, "dead_lettered")
	if last := recs[len(recs)-1]; last["outcome"] != "dead_lettered" || last["msg"] != "webhook dead-lettered" {
		t.Errorf("last log line %v, want the dead letter", last)
	}
}

// TestBufferedEventPostedOnce: an event waits on the server, not in the
// process, until a worker is free, and a worker's heartbeat keeps the
// server from handing its event to another one while the attempt runs, for
// however long it runs. Here every attempt but the first takes 3 s, beyond
// the consumer's 2 s AckWait, on two workers with four events: each is
// still posted once. The margin is structural (a heartbeat every 500 ms
// against a 2 s AckWait), not a race against the clock, so it holds on a
// loaded machine.
func TestBufferedEventPostedOnce(t *testing.T) {
	t.Parallel()
	const slow = 3 * time.Second
	rc := &receiver{respond: func(n int, w http.ResponseWriter) {
		if n > 1 {
			time.Sleep(slow)
		}
		w.WriteHeader(http.StatusOK)
	}}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.Concurrency = 2
	set.HTTPTimeout = 5 * time.Second
	set.Timings.MessageTimeout = 6 * time.Second
	h := newHarness(t, set)
	var ids []string
	for range 4 {
		e, _ := h.publish(t)
		ids = append(ids, e.ID)
	}
	h.start(t)

	eventually(t, 20*time.Second, "the events to be delivered and acked", func() bool {
		return len(rc.got()) >= len(ids) && h.consumerIdle(t)
	})
	posts := map[string]int{}
	for _, r := range rc.got() {
		posts[r.header.Get(webhook.HeaderID)]++
	}
	for _, id := range ids {
		if posts[id] != 1 {
			t.Errorf("event %s was posted %d times, want once", id, posts[id])
		}
	}
	if info := h.consumerInfo(t); info.NumRedelivered != 0 || info.Delivered.Consumer != uint64(len(ids)) {
		t.Errorf("the server delivered %d times with %d redeliveries, want %d deliveries and none again",
			info.Delivered.Consumer, info.NumRedelivered, len(ids))
	}
}

// Events waiting out a long retry delay stay ack-pending on the server. They
// must not use up MaxAckPending, or a receiver that fails a handful of
// events (say, through an outage) stalls every new event until their delays
// expire.
func TestDelayedRetriesDoNotBlockNewEvents(t *testing.T) {
	t.Parallel()
	// One worker, and as many failing events as a per-worker MaxAckPending
	// of 4 × concurrency would allow.
	const failing = 4
	rc := &receiver{respond: func(n int, w http.ResponseWriter) {
		if n <= failing {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.Concurrency = 1
	set.RetryMax = 10 * time.Second // Retry-After 60 is clamped to it
	h := newHarness(t, set)
	h.start(t)
	for range failing {
		h.publish(t)
	}
	eventually(t, 5*time.Second, "the failing events to wait out their retry delay", func() bool {
		return len(rc.got()) == failing && h.consumerInfo(t).NumAckPending == failing
	})

	e, _ := h.publish(t)
	published := time.Now()
	eventually(t, 3*time.Second, "the new event to be delivered while the others wait", func() bool {
		return len(rc.got()) == failing+1
	})
	if took := time.Since(published); took > 2*time.Second {
		t.Errorf("new event delivered after %s", took)
	}
	if got := rc.got()[failing].header.Get(webhook.HeaderID); got != e.ID {
		t.Errorf("request %d is for %s, want the new event %s", failing+1, got, e.ID)
	}
}
