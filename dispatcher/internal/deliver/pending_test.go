package deliver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// failedCopies counts the deliveries of an event whose dead-letter copy
// could not be published.
func failedCopies(recs []map[string]any) int {
	n := 0
	for _, r := range recs {
		if msg, _ := r["error"].(string); r["outcome"] == "retry" && strings.Contains(msg, "publish dead-letter copy") {
			n++
		}
	}
	return n
}

// A dead-letter copy that fails on the last attempt, and on every delivery
// after it, is retried until DEADLETTER takes it: the server must not drop
// the event once some delivery count is reached.
func TestDeadLetterCopyRetriedUntilItSucceeds(t *testing.T) {
	t.Parallel()
	rc := &receiver{respond: status(http.StatusInternalServerError)}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.MaxDeliver = 2
	h := newHarness(t, set)
	h.start(t)
	eventually(t, 5*time.Second, "the dispatcher to provision its streams", func() bool {
		return strings.Contains(h.logs.String(), `"msg":"dispatching"`)
	})
	// Without DEADLETTER, publishing a copy fails at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.js.DeleteStream(ctx, natsx.StreamDeadletter); err != nil {
		t.Fatal(err)
	}
	e, body := h.publish(t)

	// The copy fails on the last attempt (delivery 2) and on delivery 3,
	// which is past MAX_DELIVER + 1.
	eventually(t, 5*time.Second, "the dead-letter copy to fail twice", func() bool {
		return failedCopies(h.logs.attempts(e.ID)) >= 2
	})
	// Give a server that counts deliveries time to drop the event; each
	// redelivery comes within RETRY_MAX.
	time.Sleep(4 * set.RetryMax)
	if info := h.consumerInfo(t); info.NumPending+uint64(info.NumAckPending) == 0 {
		t.Fatalf("the event left the consumer without a dead-letter copy (pending %d, ack pending %d, failed copies %d)",
			info.NumPending, info.NumAckPending, failedCopies(h.logs.attempts(e.ID)))
	}
	if _, err := h.js.CreateOrUpdateStream(ctx, natsx.DeadletterStream(1)); err != nil {
		t.Fatal(err)
	}

	eventually(t, 5*time.Second, "the event to be dead-lettered once DEADLETTER is back", func() bool {
		return len(h.deadLetters(t)) == 1 && h.consumerIdle(t)
	})
	if n := len(rc.got()); n != set.MaxDeliver {
		t.Errorf("receiver got %d attempts, want MAX_DELIVER = %d", n, set.MaxDeliver)
	}
	dl := h.deadLetters(t)[0]
	if string(dl.Data) != string(body) {
		t.Errorf("dead-letter body %s, want %s", dl.Data, body)
	}
	// The copy is made on a delivery past MAX_DELIVER, which knows how
	// many attempts there were but not how the last one ended.
	for name, want := range map[string]string{
		deliver.HeaderEventID:  e.ID,
		deliver.HeaderAttempts: "2",
	} {
		if got := dl.Header.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	recs := h.logs.attempts(e.ID)
	if last := recs[len(recs)-1]; last["outcome"] != "dead_lettered" {
		t.Errorf("last outcome %v, want dead_lettered", last)
	}
}

// The pull buffers up to Concurrency events while all workers are busy, so
// a buffered event may wait most of an attempt before its own starts.
// AckWait (HTTP_TIMEOUT + a margin) must count from when a worker takes the
// event, or the server redelivers it while it is being posted.
func TestBufferedEventPostedOnce(t *testing.T) {
	t.Parallel()
	const slow = 1500 * time.Millisecond
	// Two workers post the first two events. The first answer is quick:
	// its worker pulls two more events, posts one and leaves the other
	// buffered until the second worker is free, a whole slow attempt later.
	rc := &receiver{respond: func(n int, w http.ResponseWriter) {
		if n > 1 {
			time.Sleep(slow)
		}
		w.WriteHeader(http.StatusOK)
	}}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.Concurrency = 2
	set.HTTPTimeout = 2200 * time.Millisecond
	// AckWait 2.5 s: a second more than one attempt, under load too, and half
	// a second less than the 3 s a buffered event spends before its answer.
	set.AckWaitMargin = 300 * time.Millisecond
	h := newHarness(t, set)
	var ids []string
	for range 4 {
		e, _ := h.publish(t)
		ids = append(ids, e.ID)
	}
	h.start(t)

	eventually(t, 10*time.Second, "the events to be delivered and acked", func() bool {
		return len(rc.got()) >= len(ids) && h.consumerIdle(t)
	})
	// A redelivered copy may still be on its way to the receiver.
	time.Sleep(slow + 300*time.Millisecond)
	posts := map[string]int{}
	for _, r := range rc.got() {
		posts[r.header.Get(webhook.HeaderID)]++
	}
	for _, id := range ids {
		if posts[id] != 1 {
			t.Errorf("event %s was posted %d times, want once", id, posts[id])
		}
	}
	if len(posts) != len(ids) {
		t.Errorf("posts per event id: %v", posts)
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
