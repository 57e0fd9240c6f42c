package deliver_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// TestSubscriptionConsumer: the subscription's consumer as `nats consumer
// info` shows it.
func TestSubscriptionConsumer(t *testing.T) {
	t.Parallel()
	set := fastSettings("http://127.0.0.1:1/", mustSecret(t))
	h := newHarness(t, set)
	h.start(t)
	cfg := h.consumerInfo(t).Config
	switch {
	case cfg.Durable != "wh-sub_notifier":
		t.Errorf("Durable = %q", cfg.Durable)
	case len(cfg.FilterSubjects) != 1 || cfg.FilterSubjects[0] != "orders.paid.>":
		t.Errorf("FilterSubjects = %v", cfg.FilterSubjects)
	case cfg.AckPolicy != jetstream.AckExplicitPolicy:
		t.Errorf("AckPolicy = %v", cfg.AckPolicy)
	case cfg.DeliverPolicy != jetstream.DeliverAllPolicy:
		t.Errorf("DeliverPolicy = %v, want all on sub_notifier's first start", cfg.DeliverPolicy)
	case cfg.AckWait != set.Timings.AckWait:
		t.Errorf("AckWait = %s, want the timings' %s", cfg.AckWait, set.Timings.AckWait)
	case cfg.MaxDeliver != -1:
		t.Errorf("MaxDeliver = %d, want -1: the dispatcher enforces MAX_DELIVER itself", cfg.MaxDeliver)
	case len(cfg.BackOff) != 0:
		t.Errorf("BackOff = %v, want none: NakWithDelay sets the delays", cfg.BackOff)
	case cfg.MaxAckPending != -1:
		t.Errorf("MaxAckPending = %d, want -1 (none): events waiting out a retry delay count against it", cfg.MaxAckPending)
	}
}

func TestDelivered(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t)
	rc := &receiver{respond: status(http.StatusNoContent)}
	srv := startReceiver(t, rc)
	h := newHarness(t, fastSettings(srv.URL, secret))
	h.start(t)
	e, body := h.publish(t)

	eventually(t, 5*time.Second, "the event to be delivered and acked", func() bool {
		return len(rc.got()) == 1 && h.consumerIdle(t)
	})
	req := rc.got()[0]
	if !bytes.Equal(req.body, body) {
		t.Errorf("receiver got body %s, want the published bytes %s", req.body, body)
	}
	checks := map[string]string{
		"webhook-id":   e.ID,
		"Content-Type": "application/json",
		"User-Agent":   "jethook/" + deliver.Version,
	}
	for name, want := range checks {
		if got := req.header.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	v := webhook.Verifier{Secrets: []webhook.Secret{secret}}
	if err := v.Verify(req.header.Get(webhook.HeaderID), req.header.Get(webhook.HeaderTimestamp), req.header.Get(webhook.HeaderSignature), req.body); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}

	recs := h.logsUntil(t, e.ID, "delivered")
	if len(recs) != 1 {
		t.Fatalf("got %d attempt log lines, want 1: %v", len(recs), recs)
	}
	rec := recs[0]
	want := map[string]any{"outcome": "delivered", "order_id": e.Data.OrderID, "attempt": float64(1), "status": float64(204)}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("log %s = %v, want %v", k, rec[k], v)
		}
	}
	if _, ok := rec["duration_ms"]; !ok {
		t.Error("log line has no duration_ms")
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	// The receiver is down for the first attempt, then answers 503 twice
	// (without Retry-After), then 200.
	addr := freeAddr(t)
	set := fastSettings("http://"+addr+"/webhook", mustSecret(t))
	set.RetryBase, set.RetryMax = 100*time.Millisecond, 400*time.Millisecond
	h := newHarness(t, set)
	h.start(t)
	e, body := h.publish(t)

	eventually(t, 5*time.Second, "a refused attempt", func() bool { return len(h.logs.attempts(e.ID)) >= 1 })
	rc := &receiver{respond: func(n int, w http.ResponseWriter) {
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	eventually(t, 10*time.Second, "the event to be delivered and acked", func() bool {
		return len(rc.got()) == 3 && h.consumerIdle(t)
	})
	reqs := rc.got()
	for i, r := range reqs {
		if !bytes.Equal(r.body, body) {
			t.Errorf("request %d changed the body", i+1)
		}
	}
	recs := h.logsUntil(t, e.ID, "delivered")
	first, _ := recs[0]["error"].(string)
	if recs[0]["outcome"] != "retry" || !strings.Contains(first, "refused") {
		t.Errorf("first attempt logged %v, want a refused retry", recs[0])
	}
	// A second refused attempt is possible if the listener came up late;
	// more would be a hot loop.
	if len(recs) < 4 || len(recs) > 5 {
		t.Fatalf("got %d attempts, want 4 (refused, 503, 503, 200): %v", len(recs), recs)
	}
	delivered := 0
	for _, r := range recs {
		if r["outcome"] == "delivered" {
			delivered++
		}
	}
	if delivered != 1 || recs[len(recs)-1]["outcome"] != "delivered" {
		t.Errorf("want exactly one final delivered outcome: %v", recs)
	}
	// The receiver saw attempts k, k+1, k+2 with k >= 2, so the gaps are at
	// least the smallest backoff of attempts 2 and 3.
	minGaps := []time.Duration{
		max(set.RetryBase, min(2*set.RetryBase, set.RetryMax)/2),
		max(set.RetryBase, min(4*set.RetryBase, set.RetryMax)/2),
	}
	for i, want := range minGaps {
		if gap := reqs[i+1].at.Sub(reqs[i].at); gap < want {
			t.Errorf("gap before request %d = %s, want at least %s", i+2, gap, want)
		}
	}
}

func TestDeadLetterAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	rc := &receiver{respond: status(http.StatusInternalServerError)}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.MaxDeliver = 3
	h := newHarness(t, set)
	h.start(t)
	e, body := h.publish(t)

	eventually(t, 5*time.Second, "the event to be dead-lettered", func() bool {
		return len(h.deadLetters(t)) == 1 && h.consumerIdle(t)
	})
	if n := len(rc.got()); n != 3 {
		t.Errorf("receiver got %d attempts, want 3", n)
	}
	dl := h.deadLetters(t)[0]
	if want := "deadletter.sub_notifier.orders.paid." + e.Data.OrderID; dl.Subject != want {
		t.Errorf("dead-letter subject %q, want %q", dl.Subject, want)
	}
	if !bytes.Equal(dl.Data, body) {
		t.Errorf("dead-letter body %s, want %s", dl.Data, body)
	}
	wantHeaders := map[string]string{
		consume.HeaderOriginalSubject:  event.Subject(e.Data.OrderID),
		consume.HeaderOriginalStream:   "ORDERS",
		consume.HeaderOriginalSequence: "1",
		consume.HeaderSubscription:     "sub_notifier",
		consume.HeaderAttempts:         "3",
		consume.HeaderLastStatus:       "500",
		consume.HeaderEventID:          e.ID,
		jetstream.MsgIDHeader:          "sub_notifier:ORDERS:1",
	}
	for name, want := range wantHeaders {
		if got := dl.Header.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	if got := dl.Header.Get(consume.HeaderLastError); !strings.Contains(got, "500") {
		t.Errorf("header %s = %q, want the last failure", consume.HeaderLastError, got)
	}
	recs := h.logsUntil(t, e.ID, "dead_lettered")
	if len(recs) != 3 || recs[2]["outcome"] != "dead_lettered" {
		t.Errorf("attempt log lines: %v, want 3 ending in dead_lettered", recs)
	}
}

func TestDeadLetterWithoutAttempt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// prepare publishes the message and returns its subject, event id
		// and the expected attempts header.
		prepare     func(t *testing.T, h *harness) (subject, eventID, attempts string)
		wantErrPart string
	}{
		{
			name: "body without an event id",
			prepare: func(t *testing.T, h *harness) (string, string, string) {
				h.publishRaw(t, "orders.paid.broken", []byte("not json"), "")
				return "orders.paid.broken", "", "0"
			},
			wantErrPart: "not an event",
		},
		{
			name: "the attempts are used up",
			prepare: func(t *testing.T, h *harness) (string, string, string) {
				e, _ := h.publish(t)
				// The attempt log says the last of the three attempts was
				// made and failed; the deliveries without a settled
				// outcome stand for its dead-letter copy failing (the
				// plain Nak only hurries the redelivery along).
				rec := attempt.Record{
					SubscriptionID: h.subID, EventID: e.ID, Attempt: 3, Status: 500,
					Outcome: attempt.OutcomeDeadLettered, Source: attempt.SourceEvent, MessageSeq: 1,
				}
				attempt.NewLog(h.js, slog.Default()).Add(rec)
				<-h.js.PublishAsyncComplete()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				// The consumer the fleet will find, as a dispatcher that
				// crashed left it.
				cons, err := h.js.CreateConsumer(ctx, natsx.StreamOrders, jetstream.ConsumerConfig{
					Durable: natsx.SubscriptionConsumer(h.subID), FilterSubjects: []string{"orders.paid.>"},
					AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1, AckWait: time.Minute,
				})
				if err != nil {
					t.Fatal(err)
				}
				for i := range 3 {
					batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
					if err != nil {
						t.Fatal(err)
					}
					msg, ok := <-batch.Messages()
					if !ok {
						t.Fatalf("fetch %d: no message: %v", i+1, batch.Error())
					}
					if err := msg.Nak(); err != nil {
						t.Fatal(err)
					}
				}
				return event.Subject(e.Data.OrderID), e.ID, "3"
			},
			wantErrPart: "no delivery attempts left",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := &receiver{respond: status(http.StatusOK)}
			srv := startReceiver(t, rc)
			set := fastSettings(srv.URL, mustSecret(t))
			set.MaxDeliver = 3
			h := newHarness(t, set)
			subject, eventID, attempts := tt.prepare(t, h)
			h.start(t)

			eventually(t, 5*time.Second, "the event to be dead-lettered", func() bool {
				return len(h.deadLetters(t)) == 1 && h.consumerIdle(t)
			})
			if n := len(rc.got()); n != 0 {
				t.Errorf("receiver got %d requests, want none", n)
			}
			dl := h.deadLetters(t)[0]
			want := map[string]string{
				consume.HeaderOriginalSubject: subject,
				consume.HeaderAttempts:        attempts,
				consume.HeaderLastStatus:      "0",
				consume.HeaderEventID:         eventID,
				jetstream.MsgIDHeader:         "sub_notifier:ORDERS:1",
			}
			for name, w := range want {
				if got := dl.Header.Get(name); got != w {
					t.Errorf("header %s = %q, want %q", name, got, w)
				}
			}
			if got := dl.Header.Get(consume.HeaderLastError); !strings.Contains(got, tt.wantErrPart) {
				t.Errorf("header %s = %q, want it to mention %q", consume.HeaderLastError, got, tt.wantErrPart)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		retryAfter string
		min, max   time.Duration
	}{
		// RETRY_MAX is 300ms: a 1 s Retry-After is clamped down to it.
		{"429 beyond the cap", http.StatusTooManyRequests, "1", 300 * time.Millisecond, 950 * time.Millisecond},
		// A date in the past asks for no wait; RETRY_BASE still applies.
		{"503 date in the past", http.StatusServiceUnavailable, time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 50 * time.Millisecond, 950 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := &receiver{respond: func(n int, w http.ResponseWriter) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.retryAfter)
					w.WriteHeader(tt.status)
					return
				}
				w.WriteHeader(http.StatusOK)
			}}
			srv := startReceiver(t, rc)
			set := fastSettings(srv.URL, mustSecret(t))
			set.RetryMax = 300 * time.Millisecond
			h := newHarness(t, set)
			h.start(t)
			e, _ := h.publish(t)

			eventually(t, 5*time.Second, "the event to be delivered", func() bool {
				return len(rc.got()) == 2 && h.consumerIdle(t)
			})
			reqs := rc.got()
			if gap := reqs[1].at.Sub(reqs[0].at); gap < tt.min || gap > tt.max {
				t.Errorf("retry after %s, want within [%s, %s]", gap, tt.min, tt.max)
			}
			recs := h.logsUntil(t, e.ID, "delivered")
			if len(recs) != 2 {
				t.Fatalf("attempt log lines: %v", recs)
			}
			if got, want := recs[0]["status"], float64(tt.status); got != want {
				t.Errorf("first attempt status %v, want %v", got, want)
			}
			retryIn, err := time.ParseDuration(fmt.Sprint(recs[0]["retry_in"]))
			if err != nil || retryIn < set.RetryBase || retryIn > set.RetryMax {
				t.Errorf("retry_in = %v, want within [RETRY_BASE, RETRY_MAX]", recs[0]["retry_in"])
			}
		})
	}
}

func TestSecretRotation(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := mustSecret(t), mustSecret(t)
	rc := &receiver{respond: status(http.StatusOK)}
	srv := startReceiver(t, rc)
	h := newHarness(t, fastSettings(srv.URL, oldSecret, newSecret))
	h.start(t)
	h.publish(t)

	eventually(t, 5*time.Second, "the event to be delivered", func() bool { return len(rc.got()) == 1 })
	req := rc.got()[0]
	id, ts, sig := req.header.Get(webhook.HeaderID), req.header.Get(webhook.HeaderTimestamp), req.header.Get(webhook.HeaderSignature)
	entries := strings.Fields(sig)
	if len(entries) != 2 {
		t.Fatalf("signature header %q has %d entries, want 2", sig, len(entries))
	}
	for i, secret := range []webhook.Secret{oldSecret, newSecret} {
		if !strings.HasPrefix(entries[i], "v1,") {
			t.Errorf("entry %d = %q, want a v1 signature", i+1, entries[i])
		}
		v := webhook.Verifier{Secrets: []webhook.Secret{secret}}
		if err := v.Verify(id, ts, entries[i], req.body); err != nil {
			t.Errorf("entry %d alone does not verify with its secret: %v", i+1, err)
		}
		if err := v.Verify(id, ts, sig, req.body); err != nil {
			t.Errorf("a receiver with only secret %d rejects the webhook: %v", i+1, err)
		}
	}
}

func TestRedirectIsAFailure(t *testing.T) {
	t.Parallel()
	target := &receiver{respond: status(http.StatusOK)}
	targetSrv := startReceiver(t, target)
	rc := &receiver{respond: func(_ int, w http.ResponseWriter) {
		w.Header().Set("Location", targetSrv.URL)
		w.WriteHeader(http.StatusTemporaryRedirect)
	}}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, mustSecret(t))
	set.MaxDeliver = 1
	h := newHarness(t, set)
	h.start(t)
	h.publish(t)

	eventually(t, 5*time.Second, "the event to be dead-lettered", func() bool {
		return len(h.deadLetters(t)) == 1 && h.consumerIdle(t)
	})
	if n := len(target.got()); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
	if got := h.deadLetters(t)[0].Header.Get(consume.HeaderLastStatus); got != strconv.Itoa(http.StatusTemporaryRedirect) {
		t.Errorf("last status %q, want 307", got)
	}
}

func TestShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	rc := &receiver{respond: func(_ int, w http.ResponseWriter) {
		arrived <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	}}
	srv := startReceiver(t, rc)
	h := newHarness(t, fastSettings(srv.URL, mustSecret(t)))
	h.start(t)
	e, _ := h.publish(t)

	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook arrived")
	}
	took := h.stop(t)
	if took < 200*time.Millisecond {
		t.Errorf("Run returned after %s, before the in-flight webhook finished", took)
	}
	if !h.consumerIdle(t) {
		t.Error("the in-flight webhook was not acked before Run returned")
	}
	if recs := h.logs.attempts(e.ID); len(recs) != 1 || recs[0]["outcome"] != "delivered" {
		t.Errorf("attempt log lines: %v", recs)
	}
}

func TestShutdownCancelsAfterGrace(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	rc := &receiver{respond: func(_ int, w http.ResponseWriter) {
		<-release
		w.WriteHeader(http.StatusOK)
	}}
	srv := startReceiver(t, rc)
	t.Cleanup(func() { close(release) })
	set := fastSettings(srv.URL, mustSecret(t))
	set.HTTPTimeout = 5 * time.Second
	set.MaxDeliver = 1
	set.Timings.MessageTimeout = 6 * time.Second
	set.Timings.ShutdownGrace = 100 * time.Millisecond
	h := newHarness(t, set)
	h.start(t)
	e, _ := h.publish(t)

	eventually(t, 5*time.Second, "the webhook to arrive", func() bool { return len(rc.got()) == 1 })
	if took := h.stop(t); took > 2*time.Second {
		t.Errorf("Run took %s to return, want about the grace", took)
	}
	recs := h.logs.attempts(e.ID)
	if len(recs) != 1 || recs[0]["outcome"] != "retry" {
		t.Fatalf("attempt log lines: %v, want one retry", recs)
	}
	if n := len(h.deadLetters(t)); n != 0 {
		t.Errorf("shutdown dead-lettered %d events on their last attempt", n)
	}
}

func TestLogsNeverShowTheSecret(t *testing.T) {
	t.Parallel()
	secret, raw := mustSecretText(t)
	rc := &receiver{respond: status(http.StatusInternalServerError)}
	srv := startReceiver(t, rc)
	set := fastSettings(srv.URL, secret)
	set.MaxDeliver = 2
	h := newHarness(t, set)
	h.start(t)
	h.publish(t)

	eventually(t, 5*time.Second, "the event to be dead-lettered", func() bool { return len(h.deadLetters(t)) == 1 })
	key := strings.TrimPrefix(raw, "whsec_")
	if logs := h.logs.String(); strings.Contains(logs, key) {
		t.Errorf("logs contain the secret:\n%s", logs)
	}
}

func TestSurvivesNATSRestart(t *testing.T) {
	t.Parallel()
	rc := &receiver{respond: status(http.StatusOK)}
	srv := startReceiver(t, rc)
	h := newHarness(t, fastSettings(srv.URL, mustSecret(t)))
	h.start(t)
	h.publish(t)
	eventually(t, 5*time.Second, "the first event to be delivered", func() bool { return len(rc.got()) == 1 })

	// IsConnected alone can still be true of the old connection before the
	// client has seen it die, and a publish then is lost with it: wait
	// for the reconnect itself.
	before := h.nc.Stats().Reconnects
	h.srv.Restart(t)
	eventually(t, 5*time.Second, "the test client to reconnect", func() bool {
		return h.nc.Stats().Reconnects > before && h.nc.IsConnected()
	})
	e, body := h.publish(t)
	eventually(t, 10*time.Second, "the second event to be delivered after the restart", func() bool {
		return len(rc.got()) == 2 && h.consumerIdle(t)
	})
	if got := rc.got()[1]; !bytes.Equal(got.body, body) || got.header.Get(webhook.HeaderID) != e.ID {
		t.Errorf("after the restart the receiver got %s (id %s), want event %s", got.body, got.header.Get(webhook.HeaderID), e.ID)
	}
}
