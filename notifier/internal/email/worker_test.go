package email

import (
	"context"
	"errors"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/notifier/internal/receive"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/smtptest"
)

// Shared test helpers, under the names these tests use.
var (
	eventually = testkit.Eventually
)

type fixture struct {
	nats   *natstest.Server
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	smtp   *smtptest.Server
}

// startWorker runs NATS, an SMTP server and a worker sending to it with
// claims that live claimTTL; everything stops when the test ends.
func startWorker(t *testing.T, claimTTL time.Duration) *fixture {
	t.Helper()
	return startWorkerWith(t, claimTTL, setup{})
}

// setup adjusts what startWorkerWith runs; its zero value is startWorker's.
type setup struct {
	// ackWait is the consumer's AckWait; zero means 30 s.
	ackWait time.Duration
	// unbuffered gives the worker a connection of its own that fails
	// publishes while it is disconnected instead of buffering them until
	// it reconnects: the worker sees a NATS outage as it does when a
	// cluster has lost its JetStream quorum, or when the buffered writes
	// die with the connection.
	unbuffered bool
	// worker, when not nil, adjusts the worker before it runs.
	worker func(*Worker)
}

// startWorkerWith is startWorker adjusted by s.
func startWorkerWith(t *testing.T, claimTTL time.Duration, s setup) *fixture {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	workerJS := js
	if s.unbuffered {
		nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if workerJS, err = jetstream.New(nc); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	err := natsx.Provision(ctx, js,
		[]jetstream.StreamConfig{natsx.NotificationsStream(1)},
		[]jetstream.KeyValueConfig{natsx.ProcessedBucket(1, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := workerJS.CreateOrUpdateConsumer(ctx, natsx.StreamNotifications, ConsumerConfig(receive.Subject, orDefault(s.ackWait, 30*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, natsx.BucketProcessed)
	if err != nil {
		t.Fatal(err)
	}
	mail := smtptest.Start(t)
	w := &Worker{
		Store:     processed.New(workerJS, claimTTL),
		Sender:    &SMTPSender{Addr: mail.Addr, From: "orders@example.com", Timeout: 5 * time.Second},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		RetryBase: 20 * time.Millisecond,
		RetryMax:  100 * time.Millisecond,
		BusyDelay: 50 * time.Millisecond,
	}
	if s.worker != nil {
		s.worker(w)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx, cons) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop within 10 s")
		}
	})
	return &fixture{nats: srv, js: js, stream: stream, kv: kv, smtp: mail}
}

func newEvent(t *testing.T) event.OrderPaid { return testkit.OrderPaid(t) }

// publish queues ev as the webhook handler does, with msgID as Nats-Msg-Id.
func (f *fixture) publish(t *testing.T, ev event.OrderPaid, msgID string) {
	t.Helper()
	body, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f.publishRaw(t, body, msgID)
}

func (f *fixture) publishRaw(t *testing.T, body []byte, msgID string) {
	t.Helper()
	msg := &nats.Msg{Subject: receive.Subject, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := f.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) pending(t *testing.T) uint64 {
	t.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (f *fixture) state(t *testing.T, id string) string {
	t.Helper()
	e, err := f.kv.Get(context.Background(), id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value())
}

// waitSettled waits until the worker has acked everything and ev is done.
func (f *fixture) waitSettled(t *testing.T, ev event.OrderPaid) {
	t.Helper()
	eventually(t, 10*time.Second, "NOTIFICATIONS to empty and the event to be done", func() bool {
		return f.pending(t) == 0 && f.state(t, ev.ID) == string(processed.Done)
	})
}

func TestWorkerSendsOneEmail(t *testing.T) {
	f := startWorker(t, time.Minute)
	ev := newEvent(t)
	f.publish(t, ev, ev.ID)
	f.waitSettled(t, ev)

	msgs := f.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "orders@example.com" || len(m.To) != 1 || m.To[0] != ev.Data.CustomerEmail {
		t.Errorf("envelope from %q to %v", m.From, m.To)
	}
	p := parse(t, m.Data)
	if got := p.header.Get("Subject"); !strings.Contains(got, ev.Data.OrderID) {
		t.Errorf("Subject %q lacks the order id", got)
	}
	if got, want := p.header.Get("Message-Id"), "<"+ev.ID+"@jethook>"; got != want {
		t.Errorf("Message-ID = %q, want %q", got, want)
	}
	if got := p.header.Get("To"); got != ev.Data.CustomerEmail {
		t.Errorf("To = %q", got)
	}
	if !strings.Contains(p.body, "21.00 USD") || !strings.Contains(p.body, ev.Data.OrderID) {
		t.Errorf("body lacks the amount or the order id:\n%s", p.body)
	}
}

func TestWorkerDuplicates(t *testing.T) {
	f := startWorker(t, time.Minute)
	ev := newEvent(t)
	f.publish(t, ev, ev.ID)
	f.waitSettled(t, ev)

	// The same event again under another Nats-Msg-Id gets past JetStream's
	// duplicate window; the idempotency store must stop it.
	f.publish(t, ev, ev.ID+"-again")
	eventually(t, 10*time.Second, "the duplicate to be acked", func() bool { return f.pending(t) == 0 })
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

func TestWorkerWaitsForAnotherWorkersClaim(t *testing.T) {
	f := startWorker(t, time.Minute)
	ev := newEvent(t)
	ctx := context.Background()
	// Another worker is sending this event's email right now.
	rev, err := f.kv.Create(ctx, ev.ID, []byte(processed.Claimed))
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, ev, ev.ID)
	eventually(t, 5*time.Second, "the message to be delivered more than once", func() bool {
		cons, err := f.js.Consumer(ctx, natsx.StreamNotifications, natsx.ConsumerEmail)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Delivered.Consumer >= 2
	})
	if n := f.smtp.Attempts(); n != 0 {
		t.Fatalf("%d send attempts while another worker held the claim", n)
	}
	// That worker succeeds; this one must then drop its copy.
	if _, err := f.kv.Update(ctx, ev.ID, []byte(processed.Done), rev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the message to be acked", func() bool { return f.pending(t) == 0 })
	if n := f.smtp.Attempts(); n != 0 {
		t.Fatalf("%d send attempts for an event done elsewhere", n)
	}
}

// TestWorkerTakesOverItsOwnStaleClaim: a claim left by an earlier delivery
// of the same message (its worker was killed, or never heard that the claim
// was stored) does not hold the email back for the claim's whole TTL.
func TestWorkerTakesOverItsOwnStaleClaim(t *testing.T) {
	f := startWorker(t, time.Hour)
	ev := newEvent(t)
	ctx := context.Background()
	// The stream is new, so the message published below is sequence 1.
	if _, err := f.kv.Create(ctx, ev.ID, []byte(string(processed.Claimed)+":seq-1"), jetstream.KeyTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	f.publish(t, ev, ev.ID)
	f.waitSettled(t, ev)
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

func TestWorkerRetriesRefusedEmail(t *testing.T) {
	f := startWorker(t, time.Hour)
	ev := newEvent(t)
	const refusals = 3
	f.smtp.Refuse(refusals)

	// Record the key as each attempt is on the wire. The claim lives an
	// hour here, so a new claim revision per attempt proves that each
	// failed attempt released its claim: Create cannot succeed on a live
	// key.
	type seen struct {
		value string
		rev   uint64
	}
	var mu sync.Mutex
	var during []seen
	f.smtp.OnData(func(int) {
		var s seen
		if e, err := f.kv.Get(context.Background(), ev.ID); err == nil {
			s = seen{string(e.Value()), e.Revision()}
		}
		mu.Lock()
		during = append(during, s)
		mu.Unlock()
	})

	f.publish(t, ev, ev.ID)
	f.waitSettled(t, ev)

	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
	if n := f.smtp.Attempts(); n != refusals+1 {
		t.Errorf("%d attempts, want %d", n, refusals+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(during) != refusals+1 {
		t.Fatalf("saw %d attempts, want %d", len(during), refusals+1)
	}
	for i, s := range during {
		if !strings.HasPrefix(s.value, string(processed.Claimed)+":") {
			t.Errorf("attempt %d ran with the key %q, want claimed", i+1, s.value)
		}
		if i > 0 && s.rev <= during[i-1].rev {
			t.Errorf("attempt %d reused claim revision %d: the failed attempt did not release it", i+1, s.rev)
		}
	}
}

func TestWorkerDoneOutlivesClaimTTL(t *testing.T) {
	const claimTTL = time.Second
	f := startWorker(t, claimTTL)
	ev := newEvent(t)
	f.publish(t, ev, ev.ID)
	f.waitSettled(t, ev)

	ctx := context.Background()
	kvStream, err := f.js.Stream(ctx, "KV_"+natsx.BucketProcessed)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := kvStream.GetLastMsgForSubject(ctx, "$KV."+natsx.BucketProcessed+"."+ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := raw.Header.Get(jetstream.MsgTTLHeader); ttl != "" {
		t.Errorf("the done record carries a per-key TTL %q", ttl)
	}
	// A key created after the claim with the same TTL expires after the
	// claim would have; once it is gone, the done record must still be
	// there.
	if _, err := f.kv.Create(ctx, "control", []byte("x"), jetstream.KeyTTL(claimTTL)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the control key to expire", func() bool {
		_, err := f.kv.Get(ctx, "control")
		return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
	})
	if got := f.state(t, ev.ID); got != string(processed.Done) {
		t.Fatalf("record is %q after the claim TTL, want done", got)
	}
}

func TestWorkerTerminatesUndecodableMessage(t *testing.T) {
	f := startWorker(t, time.Minute)
	f.publishRaw(t, []byte(`{"id":"evt_broken"`), "broken")
	eventually(t, 10*time.Second, "the corrupt message to be removed", func() bool { return f.pending(t) == 0 })
	if n := f.smtp.Attempts(); n != 0 {
		t.Fatalf("%d send attempts for a corrupt message", n)
	}
}

// TestWorkerRecordsDoneThroughNATSOutage: NATS goes away while the mail
// server accepts the email, so the done record cannot be written at once.
// The worker must keep the message until the record is written instead of
// acking nothing, letting the message come back after AckWait, find its own
// claim and send the email again.
func TestWorkerRecordsDoneThroughNATSOutage(t *testing.T) {
	// A short AckWait brings the redelivery that would send the second
	// email soon after NATS is back.
	const (
		ackWait = 3 * time.Second
		outage  = 2 * time.Second
	)
	f := startWorkerWith(t, time.Minute, setup{ackWait: ackWait, unbuffered: true})
	ev := newEvent(t)

	down, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.smtp.OnData(func(int) {
		once.Do(func() {
			close(down)
			// The server answers 250 once NATS is gone.
			select {
			case <-resume:
			case <-time.After(10 * time.Second):
			}
		})
	})
	f.publish(t, ev, ev.ID)

	select {
	case <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("the email did not reach the mail server within 10 s")
	}
	f.nats.Shutdown()
	close(resume)
	time.Sleep(outage)
	f.nats.Restart(t)

	// The test's own connection may still be reconnecting: errors are
	// not failures here.
	ctx := context.Background()
	eventually(t, 60*time.Second, "NOTIFICATIONS to empty and the event to be done", func() bool {
		info, err := f.stream.Info(ctx)
		if err != nil || info.State.Msgs != 0 {
			return false
		}
		e, err := f.kv.Get(ctx, ev.ID)
		return err == nil && string(e.Value()) == string(processed.Done)
	})
	// A redelivery would come AckWait after the restart at the latest.
	time.Sleep(ackWait + time.Second)
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}
