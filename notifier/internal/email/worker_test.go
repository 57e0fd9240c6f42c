package email

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/testkit"
)

var eventually = testkit.Eventually

// testTimings keep redeliveries quick: AckWait 2 s, a heartbeat every
// half second.
func testTimings() consume.Timings {
	return consume.Timings{
		AckWait:        2 * time.Second,
		Heartbeat:      500 * time.Millisecond,
		MessageTimeout: 30 * time.Second,
		SettleTimeout:  time.Second,
		ShutdownGrace:  2 * time.Second,
	}
}

type fixture struct {
	t      *testing.T
	nats   *natstest.Server
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	smtp   *smtptest.Server
	logs   *testkit.SyncBuffer
}

// setup adjusts what startWorkers runs; its zero value is one worker.
type setup struct {
	workers     int // 0 means 1
	concurrency int // per worker; 0 means 4
	timings     func(*consume.Timings)
	// unbuffered gives the workers a connection of their own that fails
	// publishes while it is disconnected instead of buffering them until
	// it reconnects: the worker sees a NATS outage as it does when a
	// cluster has lost its JetStream quorum, or when the buffered writes
	// die with the connection.
	unbuffered bool
	worker     func(*Worker)
	sender     func(*SMTPConfig)
}

func startWorker(t *testing.T) *fixture { return startWorkers(t, setup{}) }

// startWorkers runs NATS, an SMTP relay and s.workers email workers, each a
// runner with its own worker instance and SMTP pool, as separate notifier
// processes would; everything stops when the test ends.
func startWorkers(t *testing.T, s setup) *fixture {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	f := &fixture{t: t, nats: srv, js: js, smtp: smtptest.Start(t), logs: &testkit.SyncBuffer{}}
	timings := testTimings()
	if s.timings != nil {
		s.timings(&timings)
	}
	provision := func(js jetstream.JetStream) func(context.Context, uint64) (jetstream.Consumer, error) {
		return func(ctx context.Context, _ uint64) (jetstream.Consumer, error) {
			err := natsx.Provision(ctx, js,
				[]jetstream.StreamConfig{natsx.NotificationsStream(1), natsx.DeadletterStream(1)},
				[]jetstream.KeyValueConfig{natsx.ProcessedBucket(1, time.Hour)})
			if err != nil {
				return nil, err
			}
			return consume.EnsureConsumer(ctx, js, natsx.StreamNotifications, ConsumerConfig(receive.Subject, timings), 0)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := provision(js)(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.stream, err = js.Stream(ctx, natsx.StreamNotifications); err != nil {
		t.Fatal(err)
	}
	if f.kv, err = js.KeyValue(ctx, natsx.BucketProcessed); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(f.logs, nil))
	for i := range max(s.workers, 1) {
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
		scfg := SMTPConfig{Addr: f.smtp.Addr, From: "orders@example.com", CommandTimeout: 5 * time.Second,
			DataTimeout: 20 * time.Second, MaxConns: max(s.concurrency, 4)}
		if s.sender != nil {
			s.sender(&scfg)
		}
		sender, err := NewSMTPSender(scfg)
		if err != nil {
			t.Fatal(err)
		}
		w := &Worker{
			Store: processed.New(workerJS), Sender: sender, Logger: logger,
			RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, MaxAttempts: 50,
			ClaimLease: timings.AckWait, CommitLease: scfg.DataTimeout + 5*time.Second,
			Instance: fmt.Sprintf("worker-%d", i+1),
		}
		if s.worker != nil {
			s.worker(w)
		}
		r, err := consume.New(consume.Config{
			Stream: natsx.StreamNotifications, Name: natsx.ConsumerEmail, Noun: "email",
			Concurrency: max(s.concurrency, 4), Timings: timings, Handle: w.Handle,
			Provision: provision(workerJS), JS: workerJS, Logger: logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(runCtx) }()
		t.Cleanup(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("worker did not stop within 15 s")
			}
			sender.Close()
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", f.logs.String())
		}
	})
	return f
}

// publish queues ev as the webhook handler does, with msgID as Nats-Msg-Id.
func (f *fixture) publish(ev event.OrderPaid, msgID string) {
	f.t.Helper()
	body, err := ev.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	f.publishRaw(body, msgID)
}

func (f *fixture) publishRaw(body []byte, msgID string) {
	f.t.Helper()
	msg := &nats.Msg{Subject: receive.Subject, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := f.js.PublishMsg(context.Background(), msg); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) pending() uint64 {
	f.t.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		return 1 << 62 // NATS is away: not settled
	}
	return info.State.Msgs
}

func (f *fixture) state(id string) string {
	e, err := f.kv.Get(context.Background(), id)
	if err != nil {
		return ""
	}
	return string(e.Value())
}

func (f *fixture) waitSettled(evs ...event.OrderPaid) {
	f.t.Helper()
	eventually(f.t, 30*time.Second, "NOTIFICATIONS to empty and the events to be done", func() bool {
		if f.pending() != 0 {
			return false
		}
		for _, ev := range evs {
			if f.state(ev.ID) != string(processed.Done) {
				return false
			}
		}
		return true
	})
}

// emailsTo counts the accepted emails per recipient.
func (f *fixture) emailsTo() map[string]int {
	n := map[string]int{}
	for _, m := range f.smtp.Messages() {
		n[m.To[0]]++
	}
	return n
}

func (f *fixture) deadLetters() []*jetstream.RawStreamMsg {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := f.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		if m, err := s.GetMsg(ctx, seq); err == nil {
			out = append(out, m)
		}
	}
	return out
}

func (f *fixture) deadLetterCount() uint64 {
	info, err := func() (*jetstream.StreamInfo, error) {
		s, err := f.js.Stream(context.Background(), natsx.StreamDeadletter)
		if err != nil {
			return nil, err
		}
		return s.Info(context.Background())
	}()
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// eventTo is a fresh event for a customer at addr.
func eventTo(t *testing.T, addr string) event.OrderPaid {
	ev := testkit.OrderPaid(t)
	ev.Data.CustomerEmail = addr
	return ev
}

func TestWorkerSendsOneEmail(t *testing.T) {
	f := startWorker(t)
	ev := testkit.OrderPaid(t)
	f.publish(ev, ev.ID)
	f.waitSettled(ev)

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
	if !strings.Contains(p.body, "21.00 USD") || !strings.Contains(p.body, ev.Data.OrderID) {
		t.Errorf("body lacks the amount or the order id:\n%s", p.body)
	}
}

func TestWorkerDuplicates(t *testing.T) {
	f := startWorker(t)
	ev := testkit.OrderPaid(t)
	f.publish(ev, ev.ID)
	f.waitSettled(ev)
	// The same event again under another Nats-Msg-Id gets past JetStream's
	// duplicate window; the idempotency store must stop it.
	f.publish(ev, ev.ID+"-again")
	eventually(t, 10*time.Second, "the duplicate to be acked", func() bool { return f.pending() == 0 })
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

// TestWorkerNeverTakesOverALiveClaim: while another delivery holds the
// event (here a worker elsewhere, renewing its lease), the message waits
// and nothing is sent; when that delivery records the email as done, the
// message is dropped.
func TestWorkerNeverTakesOverALiveClaim(t *testing.T) {
	f := startWorker(t)
	ev := testkit.OrderPaid(t)
	ctx := context.Background()
	other := processed.New(f.js)
	c, err := other.Claim(ctx, ev.ID, "elsewhere/1/1", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.publish(ev, ev.ID)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		if err := other.Renew(ctx, &c, 2*time.Second); err != nil {
			t.Fatalf("the holder's renewal failed: %v", err)
		}
	}
	if n := f.smtp.Attempts(); n != 0 {
		t.Fatalf("%d send attempts while another delivery held the claim", n)
	}
	if !strings.Contains(f.logs.String(), `"outcome":"claimed_elsewhere"`) {
		t.Fatal("the message was never handled while the claim was held")
	}
	if err := other.MarkDone(ctx, c); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the message to be acked", func() bool { return f.pending() == 0 })
	if n := f.smtp.Attempts(); n != 0 {
		t.Fatalf("%d send attempts for an event done elsewhere", n)
	}
}

// TestWorkerSendsOnceALapsedClaimEnds: the claim of a worker that died
// lapses, and the message is sent once, soon after.
func TestWorkerSendsOnceALapsedClaimEnds(t *testing.T) {
	f := startWorker(t)
	ev := testkit.OrderPaid(t)
	if _, err := processed.New(f.js).Claim(context.Background(), ev.ID, "dead/1/1", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	f.publish(ev, ev.ID)
	f.waitSettled(ev)
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

// TestSameDeliveryTwiceSendsOnce: the case of two replicas given the same
// message, one delivery each, while the first is still sending (its
// message waited past AckWait, say). The second finds a live claim naming
// the first delivery and waits; the first sends; the email goes out once.
func TestSameDeliveryTwiceSendsOnce(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	timings := testTimings()
	err := natsx.Provision(ctx, js, []jetstream.StreamConfig{natsx.NotificationsStream(1)},
		[]jetstream.KeyValueConfig{natsx.ProcessedBucket(1, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := consume.EnsureConsumer(ctx, js, natsx.StreamNotifications, ConsumerConfig(receive.Subject, timings), 0)
	if err != nil {
		t.Fatal(err)
	}
	mail := smtptest.Start(t)
	mail.SetLatency(2 * time.Second)
	newWorker := func(name string) *Worker {
		sender, err := NewSMTPSender(SMTPConfig{Addr: mail.Addr, From: "orders@example.com",
			CommandTimeout: 5 * time.Second, DataTimeout: 20 * time.Second, MaxConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sender.Close)
		return &Worker{Store: processed.New(js), Sender: sender, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			RetryBase: 20 * time.Millisecond, RetryMax: time.Second, MaxAttempts: 10,
			ClaimLease: timings.AckWait, CommitLease: 25 * time.Second, Instance: name}
	}
	ev := testkit.OrderPaid(t)
	body, _ := ev.Marshal()
	if _, err := js.Publish(ctx, receive.Subject, body); err != nil {
		t.Fatal(err)
	}
	fetch := func() *consume.Msg {
		t.Helper()
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m, ok := <-b.Messages()
		if !ok {
			t.Fatalf("no message: %v", b.Error())
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		return &consume.Msg{Msg: m, Meta: meta}
	}
	first := fetch()
	// The server hands the message out again, as it does after AckWait.
	if err := first.Nak(); err != nil {
		t.Fatal(err)
	}
	second := fetch()
	if second.Attempt() != 2 {
		t.Fatalf("second delivery is attempt %d, want 2", second.Attempt())
	}
	var wg sync.WaitGroup
	var d1 consume.Decision
	wg.Go(func() { d1 = newWorker("replica-1").Handle(ctx, first) })
	eventually(t, 5*time.Second, "the first delivery to reach the relay", func() bool { return mail.Attempts() == 1 })
	d2 := newWorker("replica-2").Handle(ctx, second)
	wg.Wait()
	if d1.Outcome != outcomeSent || d2.Outcome != outcomeClaimedElsewhere || d2.Verdict != consume.VerdictRetry {
		t.Fatalf("first delivery %s, second %s %s; want sent, and the second to wait", d1.Outcome, d2.Outcome, d2.Verdict)
	}
	if n := len(mail.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

// TestSlowFinalDotSentOnce: a relay that takes 12 s to answer the final
// dot, and accepts, gets each email exactly once, from two workers sharing
// the consumer, with AckWait at 2 s: the heartbeat keeps the messages and
// the claim outlives the wait.
func TestSlowFinalDotSentOnce(t *testing.T) {
	f := startWorkers(t, setup{workers: 2, concurrency: 4, sender: func(c *SMTPConfig) { c.CommandTimeout = 2 * time.Second }})
	f.smtp.SetLatency(12 * time.Second)
	var evs []event.OrderPaid
	for i := range 5 {
		ev := eventTo(t, fmt.Sprintf("slow%d@example.com", i))
		evs = append(evs, ev)
		f.publish(ev, ev.ID)
	}
	eventually(t, 60*time.Second, "every email accepted and recorded", func() bool {
		if f.pending() != 0 {
			return false
		}
		for _, ev := range evs {
			if f.state(ev.ID) != string(processed.Done) {
				return false
			}
		}
		return true
	})
	for addr, n := range f.emailsTo() {
		if n != 1 {
			t.Errorf("%s got %d emails, want 1", addr, n)
		}
	}
	if n := len(f.smtp.Messages()); n != len(evs) {
		t.Fatalf("%d emails for %d events", n, len(evs))
	}
}

// TestPermanentRefusalIsDeadLetteredAtOnce: a 550 at RCPT is not retried;
// the email is in DEADLETTER with the relay's answer in its headers.
func TestPermanentRefusalIsDeadLetteredAtOnce(t *testing.T) {
	f := startWorker(t)
	f.smtp.RejectRecipients(func(addr string) bool { return addr == "gone@example.com" })
	ev := eventTo(t, "gone@example.com")
	f.publish(ev, ev.ID)
	eventually(t, 10*time.Second, "the email dead-lettered", func() bool { return f.deadLetterCount() == 1 && f.pending() == 0 })
	if n := f.smtp.Rejected(); n != 1 {
		t.Fatalf("the refused recipient was tried %d times, want once", n)
	}
	dl := f.deadLetters()[0]
	want := map[string]string{
		HeaderSMTPCode:                 "550",
		HeaderSMTPStage:                StageRcpt,
		consume.HeaderEventID:          ev.ID,
		consume.HeaderSubscription:     natsx.ConsumerEmail,
		consume.HeaderOriginalStream:   natsx.StreamNotifications,
		consume.HeaderOriginalSubject:  receive.Subject,
		consume.HeaderOriginalSequence: "1",
	}
	for k, v := range want {
		if got := dl.Header.Get(k); got != v {
			t.Errorf("dead letter %s = %q, want %q", k, got, v)
		}
	}
	if reply := dl.Header.Get(HeaderSMTPReply); !strings.Contains(reply, "5.1.1") || !strings.Contains(reply, "gone@example.com") {
		t.Errorf("dead letter %s = %q, want the relay's reply", HeaderSMTPReply, reply)
	}
	if dl.Subject != "deadletter."+natsx.ConsumerEmail+"."+receive.Subject {
		t.Errorf("dead letter subject %q", dl.Subject)
	}
	if got := f.state(ev.ID); got != "" {
		t.Errorf("the refused event is %q in the store, want its claim released", got)
	}
}

// TestRefusedRecipientsDoNotHoldBackNewOnes: with 1,100 refused recipients
// queued ahead of it, a new order's email goes out within seconds, and
// each refused address is tried once.
func TestRefusedRecipientsDoNotHoldBackNewOnes(t *testing.T) {
	f := startWorkers(t, setup{concurrency: 16})
	f.smtp.RejectRecipients(func(addr string) bool { return strings.HasPrefix(addr, "refused") })
	const refused = 1100
	for i := range refused {
		ev := eventTo(t, fmt.Sprintf("refused%d@example.com", i))
		f.publish(ev, ev.ID)
	}
	good := eventTo(t, "new@example.com")
	f.publish(good, good.ID)
	published := time.Now()
	eventually(t, 60*time.Second, "the new order's email", func() bool { return f.emailsTo()["new@example.com"] == 1 })
	t.Logf("the new email went out %s after it was queued behind %d refused ones", time.Since(published).Round(time.Millisecond), refused)
	eventually(t, 60*time.Second, "every refused email dead-lettered", func() bool { return f.deadLetterCount() == refused })
	if n := f.smtp.Rejected(); n != refused {
		t.Fatalf("%d refusals for %d refused recipients: some were retried", n, refused)
	}
}

// TestTemporaryFailuresRetriedThenDeadLettered: 451 is retried with
// backoff; a relay that keeps answering 451 dead-letters the email after
// EMAIL_MAX_ATTEMPTS with its last answer, and one that recovers sends it.
func TestTemporaryFailuresRetriedThenDeadLettered(t *testing.T) {
	t.Run("recovers", func(t *testing.T) {
		f := startWorker(t)
		f.smtp.Refuse(3)
		ev := testkit.OrderPaid(t)
		f.publish(ev, ev.ID)
		f.waitSettled(ev)
		if n, a := len(f.smtp.Messages()), f.smtp.Attempts(); n != 1 || a != 4 {
			t.Fatalf("%d emails after %d attempts, want 1 after 4", n, a)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		f := startWorkers(t, setup{worker: func(w *Worker) { w.MaxAttempts = 3 }})
		f.smtp.Refuse(1 << 30)
		ev := testkit.OrderPaid(t)
		f.publish(ev, ev.ID)
		eventually(t, 10*time.Second, "the email dead-lettered", func() bool { return f.deadLetterCount() == 1 && f.pending() == 0 })
		if a := f.smtp.Attempts(); a != 3 {
			t.Fatalf("%d attempts, want EMAIL_MAX_ATTEMPTS = 3", a)
		}
		dl := f.deadLetters()[0]
		if dl.Header.Get(HeaderSMTPCode) != "451" || dl.Header.Get(consume.HeaderAttempts) != "3" {
			t.Fatalf("dead letter headers %v, want the last 451 after 3 attempts", dl.Header)
		}
	})
}

// TestConcurrentEmailsReuseConnections: emails go out several at a time,
// over no more connections than the concurrency.
func TestConcurrentEmailsReuseConnections(t *testing.T) {
	f := startWorkers(t, setup{concurrency: 8})
	f.smtp.SetLatency(100 * time.Millisecond)
	var evs []event.OrderPaid
	for i := range 60 {
		ev := eventTo(t, fmt.Sprintf("c%d@example.com", i))
		evs = append(evs, ev)
		f.publish(ev, ev.ID)
	}
	f.waitSettled(evs...)
	if n := len(f.smtp.Messages()); n != len(evs) {
		t.Fatalf("%d emails for %d events", n, len(evs))
	}
	if p := f.smtp.Peak(); p < 4 {
		t.Errorf("at most %d emails in flight at once, want several of the 8", p)
	}
	if n := f.smtp.Sessions(); n > 8 {
		t.Errorf("%d connections for 60 emails, want at most the concurrency of 8, reused", n)
	}
}

func TestWorkerDoneOutlivesTheClaim(t *testing.T) {
	f := startWorker(t)
	ev := testkit.OrderPaid(t)
	f.publish(ev, ev.ID)
	f.waitSettled(ev)
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
		t.Errorf("the done record carries a per-key TTL %q: it would lapse like a claim", ttl)
	}
}

func TestWorkerDeadLettersUndecodableMessage(t *testing.T) {
	f := startWorker(t)
	f.publishRaw([]byte(`{"id":"evt_broken"`), "broken")
	eventually(t, 10*time.Second, "the corrupt message dead-lettered", func() bool { return f.pending() == 0 && f.deadLetterCount() == 1 })
	if n := f.smtp.Attempts(); n != 0 {
		t.Fatalf("%d send attempts for a corrupt message", n)
	}
}

// TestWorkerRecordsDoneThroughNATSOutage: NATS goes away while the relay
// accepts the email, so the done record cannot be written at once. The
// worker keeps the message until the record is written instead of letting
// it come back and send the email again.
func TestWorkerRecordsDoneThroughNATSOutage(t *testing.T) {
	f := startWorkers(t, setup{unbuffered: true})
	ev := testkit.OrderPaid(t)
	down, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.smtp.OnData(func(int) {
		once.Do(func() {
			close(down)
			// The relay answers 250 once NATS is gone.
			select {
			case <-resume:
			case <-time.After(10 * time.Second):
			}
		})
	})
	f.publish(ev, ev.ID)
	select {
	case <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("the email did not reach the relay within 10 s")
	}
	f.nats.Shutdown()
	close(resume)
	time.Sleep(2 * time.Second) // the outage
	f.nats.Restart(t)
	eventually(t, 60*time.Second, "NOTIFICATIONS to empty and the event to be done", func() bool {
		return f.pending() == 0 && f.state(ev.ID) == string(processed.Done)
	})
	// A redelivery would come AckWait (2 s) after the restart at the latest.
	time.Sleep(3 * time.Second)
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	p := policy{retryBase: 100 * time.Millisecond, retryMax: 10 * time.Second, maxAttempts: 5, claimLease: 30 * time.Second}
	temp := &SendError{Stage: StageDot, Code: 451, Reply: "4.3.0 try again later"}
	perm := &SendError{Stage: StageRcpt, Code: 550, Reply: "5.1.1 mailbox unavailable"}
	broken := &SendError{Stage: StageConnect, Err: errors.New("connection refused")}
	unknown := &SendError{Stage: StageDot, Err: errors.New("i/o timeout")}
	tests := []struct {
		name     string
		err      error
		attempt  uint64
		verdict  consume.Verdict
		outcome  string
		min, max time.Duration
	}{
		{"sent", nil, 1, consume.VerdictAck, outcomeSent, 0, 0},
		{"sent, not recorded: acked all the same", &unrecordedError{errors.New("nats down")}, 1, consume.VerdictAck, outcomeSentUnrecorded, 0, 0},
		{"sent before", processed.ErrDone, 1, consume.VerdictAck, outcomeDuplicate, 0, 0},
		{"held elsewhere: waits until the lease may end", &processed.ClaimedError{Holder: "x", Until: now.Add(4 * time.Second)}, 1, consume.VerdictRetry, outcomeClaimedElsewhere, 5 * time.Second, 5 * time.Second},
		{"held elsewhere, lease long: waits at most RETRY_MAX", &processed.ClaimedError{Holder: "x", Until: now.Add(time.Hour)}, 1, consume.VerdictRetry, outcomeClaimedElsewhere, 10 * time.Second, 10 * time.Second},
		{"held elsewhere on the last attempt: never dead-lettered", &processed.ClaimedError{Holder: "x", Until: now}, 9, consume.VerdictRetry, outcomeClaimedElsewhere, time.Second, time.Second},
		{"not an event", &undecodableError{errors.New("bad json")}, 1, consume.VerdictDeadLetter, outcomeUndecodable, 0, 0},
		{"5xx at RCPT: dead-lettered at once", perm, 1, consume.VerdictDeadLetter, outcomeRefused, 0, 0},
		{"4xx retried with backoff", temp, 2, consume.VerdictRetry, outcomeSendFailed, 100 * time.Millisecond, 200 * time.Millisecond},
		{"network failure retried", broken, 1, consume.VerdictRetry, outcomeSendFailed, 100 * time.Millisecond, 100 * time.Millisecond},
		{"no answer to the dot retried", unknown, 1, consume.VerdictRetry, outcomeSendFailed, 100 * time.Millisecond, 100 * time.Millisecond},
		{"store failure retried", errors.New("nats: timeout"), 1, consume.VerdictRetry, outcomeStoreFailed, 100 * time.Millisecond, 100 * time.Millisecond},
		{"4xx on the last attempt: dead-lettered", temp, 5, consume.VerdictDeadLetter, outcomeExhausted, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(p, result{eventID: "evt_1", attempt: tt.attempt, err: tt.err, now: now})
			if d.Verdict != tt.verdict || d.Outcome != tt.outcome {
				t.Fatalf("decide = %v %s, want %v %s", d.Verdict, d.Outcome, tt.verdict, tt.outcome)
			}
			if d.Verdict == consume.VerdictRetry && (d.Delay < tt.min || d.Delay > tt.max) {
				t.Fatalf("delay %s, want within [%s, %s]", d.Delay, tt.min, tt.max)
			}
			if d.Outcome == outcomeSent && !d.Confirm {
				t.Fatal("a sent email's ack must be confirmed")
			}
			if d.Verdict == consume.VerdictDeadLetter && d.Reason == "" {
				t.Fatal("dead letter without a reason")
			}
		})
	}
	d := decide(p, result{eventID: "evt_1", attempt: 1, err: perm, now: now})
	if d.Headers.Get(HeaderSMTPCode) != "550" || d.Headers.Get(HeaderSMTPStage) != StageRcpt || !strings.Contains(d.Headers.Get(HeaderSMTPReply), "5.1.1") {
		t.Fatalf("refusal headers %v, want the SMTP code, stage and reply", d.Headers)
	}
}

// TestCommitLeaseCoversTheWaitForTheDot: while a relay takes 6 s to
// answer the final dot, a second message for the same event (its webhook
// delivered again after JetStream's duplicate window) waits, because the
// claim was extended at the dot to outlast the answer; the claim lease
// alone (2 s here) would have lapsed and let it send a second copy.
func TestCommitLeaseCoversTheWaitForTheDot(t *testing.T) {
	f := startWorkers(t, setup{workers: 2})
	f.smtp.SetLatency(6 * time.Second)
	ev := testkit.OrderPaid(t)
	f.publish(ev, ev.ID)
	eventually(t, 5*time.Second, "the email at its final dot", func() bool { return f.smtp.Attempts() == 1 })
	time.Sleep(3 * time.Second) // past the claim lease
	f.publish(ev, ev.ID+"-again")
	f.waitSettled(ev)
	eventually(t, 20*time.Second, "both messages settled", func() bool { return f.pending() == 0 })
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

// TestOwnLostClaimTakenOverAtOnce: a delivery that failed without hearing
// whether its claim was stored (NATS lost the answer) leaves a claim that
// names this process; the next delivery here takes it over at once
// instead of waiting for the lease to lapse. A claim of another process is
// still waited for (TestWorkerNeverTakesOverALiveClaim).
func TestOwnLostClaimTakenOverAtOnce(t *testing.T) {
	f := startWorkers(t, setup{
		timings: func(tm *consume.Timings) { tm.AckWait = time.Minute; tm.Heartbeat = 15 * time.Second },
		worker:  func(w *Worker) { w.Instance = "this" },
	})
	ev := testkit.OrderPaid(t)
	// The claim of delivery 1 of the message, which this process made and
	// lost track of; the lease is a minute, longer than the test waits.
	if _, err := processed.New(f.js).Claim(context.Background(), ev.ID, "this/1/0", time.Minute); err != nil {
		t.Fatal(err)
	}
	f.publish(ev, ev.ID)
	eventually(t, 10*time.Second, "the email, well before the lost claim's lease", func() bool { return len(f.smtp.Messages()) == 1 })
}

// TestNoAckPendingLimit: emails waiting out a retry count as ack pending on
// the server, so the consumer has no limit on them; with one (it was
// 10,000), that many greylisted emails would hold back every new one.
func TestNoAckPendingLimit(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.Provision(ctx, js, []jetstream.StreamConfig{natsx.NotificationsStream(1)}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := consume.EnsureConsumer(ctx, js, natsx.StreamNotifications, ConsumerConfig(receive.Subject, testTimings()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := cons.CachedInfo().Config.MaxAckPending; n != -1 {
		t.Fatalf("the email consumer's MaxAckPending is %d, want -1 (none)", n)
	}
}
