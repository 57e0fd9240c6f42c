package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/receive"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/webhook"
)

// Shared test helpers, under the names these tests use.
var (
	freeAddr   = testkit.FreeAddr
	eventually = testkit.Eventually
)

type syncBuffer = testkit.SyncBuffer

// testSecret is a throwaway secret used only by these tests.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type instance struct {
	base   string
	stdout *syncBuffer
	stop   context.CancelFunc

	done   chan struct{}
	runErr error
}

// wait returns run's result, or fails the test when run is still going
// after timeout.
func (s *instance) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.runErr
	case <-time.After(timeout):
		t.Fatalf("run did not return within %s", timeout)
		return nil
	}
}

// startNotifier runs the service as main does, on a free port, and stops it
// when the test ends.
func startNotifier(t *testing.T, env map[string]string) *instance {
	t.Helper()
	addr := freeAddr(t)
	vars := map[string]string{"NOTIFIER_ADDR": addr, "WEBHOOK_SECRET": testSecret, "EMAIL_RETRY_BASE": "20ms", "EMAIL_RETRY_MAX": "200ms"}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &instance{base: "http://" + addr, stdout: &syncBuffer{}, done: make(chan struct{}), stop: cancel}
	go func() {
		defer close(s.done)
		s.runErr = run(ctx, nil, func(k string) string { return vars[k] }, s.stdout, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := s.wait(t, 15*time.Second); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	eventually(t, 10*time.Second, "/healthz", func() bool { return s.get("/healthz") == 200 })
	return s
}

func (s *instance) get(path string) int {
	resp, err := http.Get(s.base + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (s *instance) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 15*time.Second, "/readyz", func() bool { return s.get("/readyz") == 200 })
}

// postWebhook signs body as the dispatcher does and posts it, returning the
// status code and the body's status field.
func (s *instance) postWebhook(t *testing.T, id string, body []byte) (int, string) {
	t.Helper()
	secrets, err := webhook.ParseSecrets(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.base+receive.Path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	webhook.SetHeaders(req.Header, secrets, id, time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct{ Status string }
	_ = json.NewDecoder(resp.Body).Decode(&got)
	return resp.StatusCode, got.Status
}

func newEvent(t *testing.T) (event.OrderPaid, []byte) {
	t.Helper()
	ev := testkit.OrderPaid(t)
	body, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return ev, body
}

func TestRunRejectsBadSettings(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no secret", map[string]string{"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET"},
		{"bad timeout", map[string]string{"SMTP_TIMEOUT": "banana"}, "SMTP_TIMEOUT"},
		{"bad from", map[string]string{"SMTP_FROM": "nobody"}, "SMTP_FROM"},
		{"bad nats url", map[string]string{"NATS_URL": "localhost"}, "NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"WEBHOOK_SECRET": testSecret, "NOTIFIER_ADDR": "127.0.0.1:0"}
			for k, v := range tt.env {
				vars[k] = v
			}
			err := run(context.Background(), nil, func(k string) string { return vars[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestRunReadyThenStops(t *testing.T) {
	srv := natstest.RunServer(t)
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL()})
	s.waitReady(t)

	s.stop()
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(s.stdout.String(), `"msg":"stopped"`) {
		t.Error("run returned without logging its clean stop")
	}
}

func TestRunStartsBeforeNATS(t *testing.T) {
	port := freeAddr(t)[len("127.0.0.1:"):]
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	s := startNotifier(t, map[string]string{"NATS_URL": "nats://127.0.0.1:" + port})
	if code := s.get("/readyz"); code != 503 {
		t.Fatalf("/readyz = %d without NATS, want 503", code)
	}
	srv, err := natstest.Start(natstest.Options(t.TempDir(), n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	s.waitReady(t)
}

func TestRunLogsEmailWithoutSMTP(t *testing.T) {
	srv := natstest.RunServer(t)
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL()})
	s.waitReady(t)
	ev, body := newEvent(t)
	if code, status := s.postWebhook(t, ev.ID, body); code != 200 || status != "event_received" {
		t.Fatalf("got %d %q", code, status)
	}
	want := "Sending confirmation email to ada@example.com for order " + ev.Data.OrderID
	eventually(t, 10*time.Second, "the email log line", func() bool { return strings.Contains(s.stdout.String(), want) })
}

// TestEndToEndOneEmail posts the same webhook again and again, and slips a
// copy past JetStream's duplicate detection: the customer gets one email.
func TestEndToEndOneEmail(t *testing.T) {
	srv := natstest.RunServer(t)
	mail := smtptest.Start(t)
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL(), "SMTP_ADDR": mail.Addr, "LOG_FORMAT": "text"})
	s.waitReady(t)
	_, js := natstest.Connect(t, srv.URL())
	ctx := context.Background()
	stream, err := js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, natsx.BucketProcessed)
	if err != nil {
		t.Fatal(err)
	}
	settled := func(id string) bool {
		info, err := stream.Info(ctx)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, id)
		return info.State.Msgs == 0 && err == nil && string(e.Value()) == "done"
	}

	ev, body := newEvent(t)
	for i := range 2 {
		code, status := s.postWebhook(t, ev.ID, body)
		if code != 200 || (status != "event_received" && status != "duplicate") {
			t.Fatalf("post %d: %d %q", i+1, code, status)
		}
	}
	eventually(t, 10*time.Second, "the email to be sent and recorded", func() bool { return settled(ev.ID) })
	if n := len(mail.Messages()); n != 1 {
		t.Fatalf("%d emails after two posts, want 1", n)
	}

	// The work-queue message is gone; a late retry of the webhook is
	// answered from the idempotency store.
	if code, status := s.postWebhook(t, ev.ID, body); code != 200 || status != "duplicate" {
		t.Fatalf("late retry: %d %q, want 200 duplicate", code, status)
	}

	// A copy under another Nats-Msg-Id bypasses JetStream's deduplication.
	msg := &nats.Msg{Subject: receive.Subject, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID+"-copy")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the copy to be acked", func() bool { return settled(ev.ID) })
	if n := len(mail.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
	if !strings.Contains(s.stdout.String(), "outcome=duplicate") {
		t.Error("no duplicate logged")
	}
}

// TestRunProvisionsAgain: the email consumer, or the whole NOTIFICATIONS
// stream, deleted while the service runs (an operator's mistake, a restore)
// is created again, and emails flow without a restart. The worker notices at
// once when its pull was waiting, and within one pull's expiry
// otherwise; the waits allow for the latter.
func TestRunProvisionsAgain(t *testing.T) {
	srv := natstest.RunServer(t)
	mail := smtptest.Start(t)
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL(), "SMTP_ADDR": mail.Addr})
	s.waitReady(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(s.stdout.String())
		}
	})
	_, js := natstest.Connect(t, srv.URL())
	ctx := context.Background()
	empty := func() bool {
		stream, err := js.Stream(ctx, natsx.StreamNotifications)
		if err != nil {
			return false
		}
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}

	for i, remove := range []struct {
		what string
		do   func() error
	}{
		{"the email consumer", func() error {
			return js.DeleteConsumer(ctx, natsx.StreamNotifications, natsx.ConsumerEmail)
		}},
		{"the NOTIFICATIONS stream", func() error { return js.DeleteStream(ctx, natsx.StreamNotifications) }},
	} {
		if err := remove.do(); err != nil {
			t.Fatalf("delete %s: %v", remove.what, err)
		}
		eventually(t, 15*time.Second, "/readyz after deleting "+remove.what, func() bool { return s.get("/readyz") == 200 })
		ev, body := newEvent(t)
		eventually(t, 15*time.Second, "the webhook to be accepted after deleting "+remove.what, func() bool {
			code, status := s.postWebhook(t, ev.ID, body)
			return code == 200 && (status == "event_received" || status == "duplicate")
		})
		eventually(t, 15*time.Second, "the email after deleting "+remove.what, func() bool { return len(mail.Messages()) == i+1 })
		// The next deletion comes once the worker has acked the email.
		eventually(t, 15*time.Second, "NOTIFICATIONS to empty", empty)
	}
	if n := strings.Count(s.stdout.String(), `"msg":"consuming","service":"notifier","consumer":"notifier-email"`); n < 3 {
		t.Errorf("the worker provisioned %d times, want at least 3 (at start and after each deletion)", n)
	}
}

// TestEmailsAreReadyBeforeTheRelayIsFree: while EMAIL_CONCURRENCY emails
// wait for the relay, the worker has already taken and claimed more, so
// that a connection the relay frees goes to an email at once; the relay
// still sees no more than EMAIL_CONCURRENCY connections, and every email
// goes out once.
func TestEmailsAreReadyBeforeTheRelayIsFree(t *testing.T) {
	const concurrency, emails = 2, 12
	srv := natstest.RunServer(t)
	mail := smtptest.Start(t)
	mail.Hold(true)
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL(), "SMTP_ADDR": mail.Addr, "EMAIL_CONCURRENCY": strconv.Itoa(concurrency)})
	s.waitReady(t)
	t.Cleanup(func() {
		mail.Hold(false)
		if t.Failed() {
			t.Log(s.stdout.String())
		}
	})
	_, js := natstest.Connect(t, srv.URL())
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, natsx.BucketProcessed)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for range emails {
		ev, body := newEvent(t)
		ids[ev.ID] = true
		if code, status := s.postWebhook(t, ev.ID, body); code != 200 || status != "event_received" {
			t.Fatalf("post: %d %q", code, status)
		}
	}
	claimed := func() int {
		n := 0
		for id := range ids {
			if e, err := kv.Get(ctx, id); err == nil && strings.HasPrefix(string(e.Value()), "claimed:") {
				n++
			}
		}
		return n
	}
	const ready = 4 * concurrency
	eventually(t, 10*time.Second, "the relay to hold 2 emails while 8 are claimed", func() bool {
		return mail.Held() == concurrency && claimed() == ready
	})
	cons, err := js.Consumer(ctx, natsx.StreamNotifications, natsx.ConsumerEmail)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != ready {
		t.Errorf("%d emails taken from NOTIFICATIONS, want %d", info.NumAckPending, ready)
	}
	if n := mail.Sessions(); n > concurrency {
		t.Errorf("%d connections to the relay, want at most %d", n, concurrency)
	}

	mail.Hold(false)
	eventually(t, 15*time.Second, "every email", func() bool { return len(mail.Messages()) >= emails })
	sent := map[string]int{}
	for _, m := range mail.Messages() {
		sent[m.Header.Get("Message-Id")]++
	}
	if len(sent) != emails {
		t.Errorf("%d distinct emails, want %d", len(sent), emails)
	}
	for id, n := range sent {
		if n != 1 {
			t.Errorf("email %s sent %d times", id, n)
		}
	}
	if n := mail.Sessions(); n > concurrency {
		t.Errorf("%d connections to the relay, want at most %d", n, concurrency)
	}
}

// TestNoEmailStartsAfterStopBegins: an email still waiting for a relay
// connection when the notifier is told to stop is not sent during the
// shutdown grace, where its answer could be cut off after the final dot;
// it stays in NOTIFICATIONS for the next delivery. The one under way
// finishes.
func TestNoEmailStartsAfterStopBegins(t *testing.T) {
	srv := natstest.RunServer(t)
	mail := smtptest.Start(t)
	mail.Hold(true)
	t.Cleanup(func() { mail.Hold(false) })
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL(), "SMTP_ADDR": mail.Addr, "EMAIL_CONCURRENCY": "1"})
	s.waitReady(t)
	for range 3 {
		ev, body := newEvent(t)
		if code, status := s.postWebhook(t, ev.ID, body); code != 200 || status != "event_received" {
			t.Fatalf("post: %d %q", code, status)
		}
	}
	_, js := natstest.Connect(t, srv.URL())
	ctx := context.Background()
	cons, err := js.Consumer(ctx, natsx.StreamNotifications, natsx.ConsumerEmail)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "one email at the relay, three taken", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && mail.Held() == 1 && info.NumAckPending == 3
	})
	s.stop()
	eventually(t, 5*time.Second, "the stop to begin", func() bool { return strings.Contains(s.stdout.String(), "shutting down") })
	mail.Hold(false)
	if err := s.wait(t, 15*time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := len(mail.Messages()); n != 1 {
		t.Errorf("%d emails sent after the stop began, want only the one under way", n)
	}
	stream, err := js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Errorf("NOTIFICATIONS holds %v messages (%v), want the 2 not sent", info.State.Msgs, err)
	}
}
