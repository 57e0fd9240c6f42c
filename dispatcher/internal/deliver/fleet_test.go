package deliver_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/dispatcher/internal/redeliver"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/webhook"
)

// platform is NATS, a registry, and the fleets of one or more dispatcher
// replicas, with subscriptions created through the registry as the admin
// API creates them.
type platform struct {
	t    *testing.T
	srv  *natstest.Server
	js   jetstream.JetStream
	reg  *registry.Registry
	set  deliver.Settings
	logs *logBuffer
}

func newPlatform(t *testing.T, change func(*deliver.Settings)) *platform {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	p := &platform{t: t, srv: srv, js: js, set: fastSettings("").Settings, logs: &logBuffer{}}
	if change != nil {
		change(&p.set)
	}
	p.reg = p.registry()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.reg.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fleet logs:\n%s", p.logs.String())
		}
	})
	return p
}

func (p *platform) registry() *registry.Registry {
	p.t.Helper()
	reg, err := registry.New(p.js, testKey, 1, slog.New(slog.NewJSONHandler(p.logs, nil)), registry.Options{})
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Provision(ctx); err != nil {
		p.t.Fatal(err)
	}
	return reg
}

// replica runs one more dispatcher replica's fleet until the test ends, and
// returns a function that stops it.
func (p *platform) replica() (stop func()) {
	p.t.Helper()
	_, js := natstest.Connect(p.t, p.srv.URL())
	logger := slog.New(slog.NewJSONHandler(p.logs, nil))
	reg, err := registry.New(js, testKey, 1, logger, registry.Options{})
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := reg.Provision(ctx); err != nil {
		p.t.Fatal(err)
	}
	guard := ssrf.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	f := deliver.New(js.Conn(), js, reg, p.set, logger, guard.Client(p.set.HTTPTimeout, 64), deliver.NewMetrics(prometheus.NewRegistry()))
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					p.t.Errorf("fleet Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				p.t.Error("fleet did not stop within 15 s")
			}
		})
	}
	p.t.Cleanup(stop)
	testkit.Eventually(p.t, 10*time.Second, "the replica to be ready", func() bool { return f.Ready(context.Background()) == nil })
	return stop
}

// create stores a subscription to url for types and returns its id and
// its secret.
func (p *platform) create(url string, types []string, change func(*subscription.Fields)) (string, webhook.Secret) {
	p.t.Helper()
	f := subscription.Fields{URL: &url, EventTypes: &types}
	if change != nil {
		change(&f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, text, err := p.reg.Create(ctx, f)
	if err != nil {
		p.t.Fatal(err)
	}
	s, err := webhook.ParseSecret(text)
	if err != nil {
		p.t.Fatal(err)
	}
	return e.Subscription.ID, s
}

func (p *platform) get(id string) registry.Entry {
	p.t.Helper()
	e, err := p.reg.Get(context.Background(), id)
	if err != nil {
		p.t.Fatal(err)
	}
	return e
}

// waitConsumer waits until the subscription's consumer exists.
func (p *platform) waitConsumer(id string) {
	p.t.Helper()
	testkit.Eventually(p.t, 10*time.Second, "the consumer of "+id, func() bool {
		_, err := p.js.Consumer(context.Background(), natsx.StreamOrders, natsx.SubscriptionConsumer(id))
		return err == nil
	})
}

func (p *platform) consumer(id string) *jetstream.ConsumerInfo {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := p.js.Consumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(id))
	if err != nil {
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

func (p *platform) publish(subject string) (event.OrderPaid, []byte) {
	p.t.Helper()
	e := testkit.OrderPaid(p.t)
	body, err := e.Marshal()
	if err != nil {
		p.t.Fatal(err)
	}
	if subject == "" {
		subject = event.Subject(e.Data.OrderID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.js.Publish(ctx, subject, body, jetstream.WithMsgID(e.ID)); err != nil {
		p.t.Fatal(err)
	}
	return e, body
}

// opsEvents returns the OPS events of kind about id.
func (p *platform) opsEvents(kind, id string) []map[string]any {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, natsx.StreamOps)
	if err != nil {
		return nil
	}
	var out []map[string]any
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(natsx.OpsSubject(kind, id)))
		if err != nil {
			return out
		}
		var ev map[string]any
		_ = json.Unmarshal(m.Data, &ev)
		out = append(out, ev)
		seq = m.Sequence
	}
}

// attempts returns subscription id's attempt records.
func (p *platform) attempts(id string) []attempt.Record {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, natsx.StreamAttempts)
	if err != nil {
		return nil
	}
	var out []attempt.Record
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(natsx.AttemptFilter(id)))
		if err != nil {
			return out
		}
		var r attempt.Record
		_ = json.Unmarshal(m.Data, &r)
		out = append(out, r)
		seq = m.Sequence
	}
}

// verify checks a request's signature with secret.
func verify(req request, secret webhook.Secret) error {
	return webhook.Verifier{Secrets: []webhook.Secret{secret}}.Verify(
		req.header.Get(webhook.HeaderID), req.header.Get(webhook.HeaderTimestamp), req.header.Get(webhook.HeaderSignature), req.body)
}

// TestFanOutSignsEachWithItsOwnSecret: two subscriptions both get each
// event, with the same webhook-id, each signed with its own secret only;
// a subscription's event types filter what it gets.
func TestFanOutSignsEachWithItsOwnSecret(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, nil)
	a, b, all := &receiver{respond: status(200)}, &receiver{respond: status(200)}, &receiver{respond: status(200)}
	idA, secA := p.create(startReceiver(t, a).URL, []string{"order.paid"}, nil)
	idB, secB := p.create(startReceiver(t, b).URL, []string{"order.paid"}, nil)
	idAll, _ := p.create(startReceiver(t, all).URL, []string{subscription.AllTypes}, nil)
	p.replica()
	for _, id := range []string{idA, idB, idAll} {
		p.waitConsumer(id)
	}
	e, body := p.publish("")
	// An event of another type, which only the * subscription asked for.
	other, _ := p.publish("orders.refunded." + testkit.OrderPaid(t).Data.OrderID)
	testkit.Eventually(t, 10*time.Second, "every delivery", func() bool {
		return len(a.got()) == 1 && len(b.got()) == 1 && len(all.got()) == 2
	})
	for _, tc := range []struct {
		name         string
		rc           *receiver
		own, foreign webhook.Secret
	}{{"a", a, secA, secB}, {"b", b, secB, secA}} {
		req := tc.rc.got()[0]
		if req.header.Get(webhook.HeaderID) != e.ID || string(req.body) != string(body) {
			t.Errorf("%s got webhook-id %q, want %s with the event's bytes", tc.name, req.header.Get(webhook.HeaderID), e.ID)
		}
		if err := verify(req, tc.own); err != nil {
			t.Errorf("%s: its own secret does not verify: %v", tc.name, err)
		}
		if err := verify(req, tc.foreign); err == nil {
			t.Errorf("%s: the other subscription's secret verifies too", tc.name)
		}
	}
	ids := map[string]bool{}
	for _, r := range all.got() {
		ids[r.header.Get(webhook.HeaderID)] = true
	}
	if !ids[e.ID] || !ids[other.ID] {
		t.Errorf("the * subscription got %v, want both events", ids)
	}
	// The attempt log is written without waiting; it follows a moment later.
	testkit.Eventually(t, 5*time.Second, "subscription a's attempt logged", func() bool { return len(p.attempts(idA)) == 1 })
}

// TestGoneDisables: a 410 disables the subscription at once (reason gone),
// pauses its consumer so that the events after it wait, dead-letters the
// event that got it, and announces it; enabling it again delivers what
// waited.
func TestGoneDisables(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, nil)
	var mu sync.Mutex
	gone := true
	rc := &receiver{respond: func(_ int, w http.ResponseWriter) {
		mu.Lock()
		defer mu.Unlock()
		if gone {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusOK)
	}}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, nil)
	p.replica()
	p.waitConsumer(id)
	first, _ := p.publish("")
	testkit.Eventually(t, 10*time.Second, "the subscription disabled", func() bool {
		s := p.get(id).Subscription
		return s.Status == subscription.StatusDisabled && s.DisabledReason == subscription.ReasonGone
	})
	testkit.Eventually(t, 10*time.Second, "its consumer paused", func() bool {
		info := p.consumer(id)
		return info != nil && info.Paused
	})
	if n := len(p.opsEvents("disabled", id)); n != 1 {
		t.Errorf("%d OPS disabled events, want 1", n)
	}
	later, _ := p.publish("")
	time.Sleep(time.Second) // the event must wait, not go out
	if n := len(rc.got()); n != 1 {
		t.Fatalf("%d requests, want only the one answered 410", n)
	}
	ctx := context.Background()
	dl, err := p.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dl.GetLastMsgForSubject(ctx, natsx.DeadletterFilter(id))
	if err != nil || m.Header.Get(consume.HeaderEventID) != first.ID || m.Header.Get(consume.HeaderReason) != "endpoint gone" {
		t.Fatalf("dead letter of the 410'd event: %v %v", m, err)
	}
	mu.Lock()
	gone = false
	mu.Unlock()
	if _, _, err := p.reg.SetStatus(ctx, id, 0, subscription.StatusEnabled, ""); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the waiting event delivered once enabled", func() bool {
		got := rc.got()
		return len(got) == 2 && got[1].header.Get(webhook.HeaderID) == later.ID
	})
}

// TestBreakerPausesAndResumes: failures in a row pause the consumer (as
// nats consumer info shows) for the cool-off; the first success after it
// closes the breaker; a failed probe pauses again, twice as long.
func TestBreakerPausesAndResumes(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) {
		s.Breaker = deliver.BreakerSettings{Failures: 3, Cooloff: 2 * time.Second, CooloffMax: 8 * time.Second, DisableAfter: time.Hour}
		s.RetryBase, s.RetryMax = 50*time.Millisecond, 100*time.Millisecond
		s.MaxDeliver = 1000
	})
	var mu sync.Mutex
	failing := true
	rc := &receiver{respond: func(_ int, w http.ResponseWriter) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, func(f *subscription.Fields) { one := 1; f.MaxInFlight = &one })
	p.replica()
	p.waitConsumer(id)
	e, _ := p.publish("")
	testkit.Eventually(t, 10*time.Second, "the breaker open", func() bool {
		info := p.consumer(id)
		return p.get(id).Subscription.Status == subscription.StatusPaused && info != nil && info.Paused
	})
	h := p.get(id).Health
	if h.PausedUntil == nil || h.Cooloff != 2*time.Second || h.FailingSince == nil {
		t.Fatalf("health after the breaker opened: %+v", h)
	}
	if n := len(rc.got()); n != 3 {
		t.Errorf("%d attempts before the breaker opened, want BREAKER_FAILURES = 3", n)
	}
	// The probe after the pause fails: paused again, twice as long.
	testkit.Eventually(t, 15*time.Second, "the pause doubled after a failed probe", func() bool {
		return p.get(id).Health.Cooloff == 4*time.Second
	})
	mu.Lock()
	failing = false
	mu.Unlock()
	testkit.Eventually(t, 20*time.Second, "the breaker closed by a success", func() bool {
		e := p.get(id)
		return e.Subscription.Status == subscription.StatusEnabled && e.Health == (registry.Health{})
	})
	got := rc.got()
	if last := got[len(got)-1]; last.header.Get(webhook.HeaderID) != e.ID {
		t.Fatalf("last request for %s, want the event", last.header.Get(webhook.HeaderID))
	}
	testkit.Eventually(t, 5*time.Second, "the consumer resumed", func() bool {
		info := p.consumer(id)
		return info != nil && !info.Paused
	})
	for _, kind := range []string{"failing", "paused", "recovered"} {
		if len(p.opsEvents(kind, id)) == 0 {
			t.Errorf("no OPS %s event", kind)
		}
	}
	if n := len(p.opsEvents("paused", id)); n != 2 {
		t.Errorf("%d OPS paused events, want 2 (opened, then again after the failed probe)", n)
	}
}

// TestDisableAfter: an endpoint without a success for DISABLE_AFTER is
// disabled with reason failing.
func TestDisableAfter(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) {
		s.Breaker = deliver.BreakerSettings{Failures: 2, Cooloff: 500 * time.Millisecond, CooloffMax: time.Second, DisableAfter: 3 * time.Second}
		s.MaxDeliver = 1000
	})
	rc := &receiver{respond: status(http.StatusInternalServerError)}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, nil)
	p.replica()
	p.waitConsumer(id)
	p.publish("")
	testkit.Eventually(t, 20*time.Second, "the subscription disabled as failing", func() bool {
		s := p.get(id).Subscription
		return s.Status == subscription.StatusDisabled && s.DisabledReason == subscription.ReasonFailing
	})
	if len(p.opsEvents("disabled", id)) != 1 {
		t.Error("no OPS disabled event")
	}
}

// TestIsolation: with one endpoint down and one answering after 5 s, a
// healthy endpoint gets every event while the slow one is still on its
// first few: their consumers share nothing but the process.
func TestIsolation(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) {
		s.HTTPTimeout = 6 * time.Second
		s.Timings.MessageTimeout = 7 * time.Second
		s.Timings.AckWait = 10 * time.Second
		s.Timings.Heartbeat = 2 * time.Second
	})
	healthy := &receiver{respond: status(http.StatusOK)}
	slow := &receiver{respond: func(_ int, w http.ResponseWriter) { time.Sleep(5 * time.Second); w.WriteHeader(http.StatusOK) }}
	healthyID, _ := p.create(startReceiver(t, healthy).URL, []string{"order.paid"}, nil)
	slowID, _ := p.create(startReceiver(t, slow).URL, []string{"order.paid"}, nil)
	downID, _ := p.create("http://"+freeAddr(t)+"/down", []string{"order.paid"}, nil)
	p.replica()
	for _, id := range []string{healthyID, slowID, downID} {
		p.waitConsumer(id)
	}
	const events = 50
	published := map[string]time.Time{}
	for range events {
		e, _ := p.publish("")
		published[e.ID] = time.Now()
	}
	testkit.Eventually(t, 20*time.Second, "the healthy endpoint's events", func() bool { return len(healthy.got()) == events })
	if n := len(slow.got()); n >= events/2 {
		t.Fatalf("the slow endpoint got %d of %d while the healthy one got all: they are not isolated", n, events)
	}
	var worst time.Duration
	for _, r := range healthy.got() {
		worst = max(worst, r.at.Sub(published[r.header.Get(webhook.HeaderID)]))
	}
	t.Logf("healthy endpoint: %d events, the slowest %s after its publish; slow endpoint: %d so far", events, worst, len(slow.got()))
}

// TestChangesReachEveryReplica: a patch or a delete made through one
// replica's registry reaches another running replica within a second: the
// next event goes to the new URL, and a deleted subscription's consumer is
// removed.
func TestChangesReachEveryReplica(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, nil)
	oldRC, newRC := &receiver{respond: status(200)}, &receiver{respond: status(200)}
	id, _ := p.create(startReceiver(t, oldRC).URL, []string{"order.paid"}, nil)
	p.replica() // the second replica; the test's registry is the first
	p.waitConsumer(id)
	newURL := startReceiver(t, newRC).URL
	ctx := context.Background()
	if _, err := p.reg.Update(ctx, id, 0, subscription.Fields{URL: &newURL}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	testkit.Eventually(t, 5*time.Second, "an event to reach the new URL", func() bool {
		p.publish("")
		time.Sleep(50 * time.Millisecond)
		return len(newRC.got()) > 0
	})
	if took := newRC.got()[0].at.Sub(changed); took > time.Second {
		t.Errorf("the new URL got its first event %s after the patch", took)
	}
	if err := p.reg.Delete(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	testkit.Eventually(t, 5*time.Second, "the consumer removed", func() bool { return p.consumer(id) == nil })
	if took := time.Since(deleted); took > time.Second {
		t.Errorf("the consumer was removed %s after the delete", took)
	}
}

// TestRateLimit: a subscription gets no more than rate_limit_per_s
// webhooks a second from a process.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, nil)
	rc := &receiver{respond: status(200)}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, func(f *subscription.Fields) { r := 5; f.RateLimitPerS = &r })
	p.replica()
	p.waitConsumer(id)
	for range 15 {
		p.publish("")
	}
	testkit.Eventually(t, 15*time.Second, "every event", func() bool { return len(rc.got()) == 15 })
	got := rc.got()
	// A burst of 5, then 5 a second: the 15th no sooner than 2 s after
	// the first.
	if span := got[14].at.Sub(got[0].at); span < 1800*time.Millisecond {
		t.Fatalf("15 webhooks within %s at 5 a second", span)
	}
}

// TestResumesFromTheAttemptLog: a consumer deleted while no dispatcher ran
// is created again where the subscription stood, as its last attempt
// recorded: the events delivered before are not delivered again.
func TestResumesFromTheAttemptLog(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, nil)
	rc := &receiver{respond: status(200)}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, nil)
	stop := p.replica()
	p.waitConsumer(id)
	var before []string
	for i := range 5 {
		e, _ := p.publish("")
		before = append(before, e.ID)
		testkit.Eventually(t, 5*time.Second, "delivery", func() bool { return len(rc.got()) == i+1 })
		// Each attempt records the ack floor the runner last read; the
		// runner reads it a second after settling.
		time.Sleep(1100 * time.Millisecond)
	}
	stop()
	ctx := context.Background()
	if err := p.js.DeleteConsumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(id)); err != nil {
		t.Fatal(err)
	}
	p.replica()
	p.waitConsumer(id)
	e, _ := p.publish("")
	testkit.Eventually(t, 10*time.Second, "the new event", func() bool {
		for _, r := range rc.got() {
			if r.header.Get(webhook.HeaderID) == e.ID {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	counts := map[string]int{}
	for _, r := range rc.got() {
		counts[r.header.Get(webhook.HeaderID)]++
	}
	// Only the last event before the stop may come again: its own ack
	// was not yet in the floor its attempt recorded.
	for _, id := range before[:4] {
		if counts[id] != 1 {
			t.Errorf("event %s delivered %d times: the recreated consumer replayed the stream", id, counts[id])
		}
	}
	if n := counts[e.ID]; n != 1 {
		t.Errorf("the new event delivered %d times", n)
	}
}

// TestRedelivery: an event put on REDELIVERIES for one subscription is
// delivered to it alone, once; one that fails for good is dead-lettered
// under its subscription and original subject.
func TestRedelivery(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) { s.MaxDeliver = 2 })
	ok, other := &receiver{respond: status(200)}, &receiver{respond: status(200)}
	bad := &receiver{respond: status(500)}
	okID, okSecret := p.create(startReceiver(t, ok).URL, []string{"order.paid"}, nil)
	p.create(startReceiver(t, other).URL, []string{"order.paid"}, nil)
	badID, _ := p.create(startReceiver(t, bad).URL, []string{"order.paid"}, nil)
	p.replica()
	e := testkit.OrderPaid(t)
	body, _ := e.Marshal()
	ctx := context.Background()
	from := redeliver.Origin{Subject: event.Subject(e.Data.OrderID), Stream: natsx.StreamOrders, Sequence: 42}
	for _, id := range []string{okID, badID} {
		if _, err := p.js.PublishMsg(ctx, redeliver.Message(id, e.ID, body, from, attempt.SourceReplay, "", "test:"+id)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "the redelivery and the dead letter", func() bool {
		dl, err := p.js.Stream(ctx, natsx.StreamDeadletter)
		if err != nil {
			return false
		}
		_, err = dl.GetLastMsgForSubject(ctx, natsx.DeadletterSubject(badID, from.Subject))
		return len(ok.got()) == 1 && err == nil
	})
	if err := verify(ok.got()[0], okSecret); err != nil {
		t.Errorf("the redelivery is not signed with its subscription's secret: %v", err)
	}
	if n := len(other.got()); n != 0 {
		t.Errorf("another subscription got %d redeliveries", n)
	}
	var recs []attempt.Record
	testkit.Eventually(t, 5*time.Second, "the redelivery's attempt logged", func() bool { recs = p.attempts(okID); return len(recs) > 0 })
	if len(recs) != 1 || recs[0].Source != attempt.SourceReplay || recs[0].Outcome != attempt.OutcomeDelivered {
		t.Errorf("attempt log of the redelivery: %+v", recs)
	}
	dl, _ := p.js.Stream(ctx, natsx.StreamDeadletter)
	m, _ := dl.GetLastMsgForSubject(ctx, natsx.DeadletterSubject(badID, from.Subject))
	if m.Header.Get(consume.HeaderOriginalSequence) != "42" || m.Header.Get(consume.HeaderSubscription) != badID {
		t.Errorf("the dead letter of a redelivery lost its origin: %v", m.Header)
	}
}

// TestNoAckPendingLimit: events waiting out a retry count as ack pending
// on the server, so neither a subscription's consumer nor the redeliver
// consumer limits them; with a limit (it was 10,000), that many failing
// events would stop every new delivery until their delays expired.
func TestNoAckPendingLimit(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, nil)
	id, _ := p.create(startReceiver(t, &receiver{respond: status(200)}).URL, []string{"order.paid"}, nil)
	p.replica()
	p.waitConsumer(id)
	if info := p.consumer(id); info == nil || info.Config.MaxAckPending != -1 {
		t.Fatalf("the subscription's consumer: %+v, want MaxAckPending -1 (none)", info)
	}
	c, err := p.js.Consumer(context.Background(), natsx.StreamRedeliveries, natsx.ConsumerRedeliver)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.CachedInfo().Config.MaxAckPending; n != -1 {
		t.Fatalf("the redeliver consumer's MaxAckPending is %d, want -1 (none)", n)
	}
}

// TestTwoSeriesOfOneEventEachCountTheirOwn: an event retried by its
// subscription's consumer and, at the same time, by a recovery through
// REDELIVERIES makes MAX_DELIVER attempts in each series and is
// dead-lettered by each, however their attempt records interleave.
func TestTwoSeriesOfOneEventEachCountTheirOwn(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) { s.MaxDeliver = 3 })
	rc := &receiver{respond: status(500)}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, nil)
	p.replica()
	p.waitConsumer(id)
	e, body := p.publish("")
	ctx := context.Background()
	from := redeliver.Origin{Subject: event.Subject(e.Data.OrderID), Stream: natsx.StreamOrders, Sequence: 1}
	if _, err := p.js.PublishMsg(ctx, redeliver.Message(id, e.ID, body, from, attempt.SourceRecover, "", "test:"+e.ID)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "a dead letter from each series", func() bool {
		dl, err := p.js.Stream(ctx, natsx.StreamDeadletter)
		if err != nil {
			return false
		}
		info, err := dl.Info(ctx)
		return err == nil && info.State.Msgs == 2
	})
	time.Sleep(500 * time.Millisecond) // a retry that should not be, would come within it
	if n := len(rc.got()); n != 6 {
		t.Fatalf("%d requests for two series of MAX_DELIVER=3, want 6", n)
	}
}

// TestHeldDeliveriesAreNotAttempts: replays of a disabled subscription
// are held, delivery after delivery, far more often than MAX_DELIVER; none
// of those deliveries posts, so none counts as an attempt, and once the
// subscription is enabled again every replay is delivered, none
// dead-lettered, and its first attempt is logged as attempt 1.
func TestHeldDeliveriesAreNotAttempts(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) { s.MaxDeliver = 2 })
	rc := &receiver{respond: status(200)}
	id, _ := p.create(startReceiver(t, rc).URL, []string{"order.paid"}, nil)
	ctx := context.Background()
	if _, _, err := p.reg.SetStatus(ctx, id, 0, subscription.StatusDisabled, subscription.ReasonManual); err != nil {
		t.Fatal(err)
	}
	p.replica()
	const replays = 3
	for i := range replays {
		e := testkit.OrderPaid(t)
		body, _ := e.Marshal()
		from := redeliver.Origin{Subject: event.Subject(e.Data.OrderID), Stream: natsx.StreamOrders, Sequence: uint64(100 + i)}
		if _, err := p.js.PublishMsg(ctx, redeliver.Message(id, e.ID, body, from, attempt.SourceReplay, "", "test:"+e.ID)); err != nil {
			t.Fatal(err)
		}
	}
	// Every replay held on at least four deliveries, twice MAX_DELIVER.
	held := `"msg":"webhook held: the subscription is disabled"`
	testkit.Eventually(t, 20*time.Second, "the replays held again and again", func() bool {
		return strings.Count(p.logs.String(), held) >= replays*4
	})
	if len(rc.got()) != 0 {
		t.Fatal("a disabled subscription got a webhook")
	}
	if _, _, err := p.reg.SetStatus(ctx, id, 0, subscription.StatusEnabled, ""); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "every replay delivered once enabled", func() bool { return len(rc.got()) == replays })
	dl, err := p.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dl.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("DEADLETTER holds %d messages (%v): a held delivery counted as an attempt", info.State.Msgs, err)
	}
	var recs []attempt.Record
	testkit.Eventually(t, 5*time.Second, "the attempts logged", func() bool { recs = p.attempts(id); return len(recs) == replays })
	for _, r := range recs {
		if r.Attempt != 1 || r.Outcome != attempt.OutcomeDelivered {
			t.Errorf("attempt record %+v, want attempt 1, delivered", r)
		}
	}
}

// TestTokenInTheURLIsNeverShown: an endpoint that takes its token in the
// query (or the userinfo) and cannot be reached fails with an error that
// names the URL, in the logs, the attempt log and the dead letter: the
// token is xxxxx in each.
func TestTokenInTheURLIsNeverShown(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, func(s *deliver.Settings) { s.MaxDeliver = 1 })
	const token = "s3cr3t-t0ken"
	url := "http://user:" + token + "@" + freeAddr(t) + "/in?token=" + token
	id, _ := p.create(url, []string{"order.paid"}, nil)
	p.replica()
	p.waitConsumer(id)
	p.publish("")
	var recs []attempt.Record
	testkit.Eventually(t, 10*time.Second, "the failed attempt logged", func() bool { recs = p.attempts(id); return len(recs) == 1 })
	if !strings.Contains(recs[0].Error, "token=xxxxx") {
		t.Errorf("attempt error %q, want the URL with its token masked", recs[0].Error)
	}
	ctx := context.Background()
	var dead jetstream.RawStreamMsg
	testkit.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dl, err := p.js.Stream(ctx, natsx.StreamDeadletter)
		if err != nil {
			return false
		}
		m, err := dl.GetLastMsgForSubject(ctx, "deadletter."+id+".>")
		if err == nil {
			dead = *m
		}
		return err == nil
	})
	shown := map[string]string{"logs": p.logs.String(), "attempt error": recs[0].Error}
	for name, values := range dead.Header {
		shown["dead letter header "+name] = strings.Join(values, " ")
	}
	for where, text := range shown {
		if strings.Contains(text, token) {
			t.Errorf("the token is shown in the %s: %s", where, text)
		}
	}
}

// TestSSRFRefusedAtDial: a subscription to a name that resolves to a
// refused address fails at delivery, with the guard's clear error in the
// attempt log.
func TestSSRFRefusedAtDial(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	reg, err := registry.New(js, testKey, 1, logger, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := reg.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	rc := &receiver{respond: status(200)}
	url := strings.Replace(startReceiver(t, rc).URL, "127.0.0.1", "localhost", 1)
	types := []string{"order.paid"}
	e, _, err := reg.Create(ctx, subscription.Fields{URL: &url, EventTypes: &types})
	if err != nil {
		t.Fatal(err)
	}
	set := fastSettings("").Settings
	set.MaxDeliver = 1
	guard := ssrf.New(nil) // public addresses only
	f := deliver.New(js.Conn(), js, reg, set, logger, guard.Client(set.HTTPTimeout, 4), nil)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	p := &platform{t: t, srv: srv, js: js, reg: reg}
	p.waitConsumer(e.Subscription.ID)
	p.publish("")
	var recs []attempt.Record
	testkit.Eventually(t, 10*time.Second, "the refused attempt logged", func() bool {
		recs = p.attempts(e.Subscription.ID)
		return len(recs) == 1
	})
	if !strings.Contains(recs[0].Error, "refused") || !strings.Contains(recs[0].Error, "loopback") || recs[0].Status != 0 {
		t.Fatalf("attempt record %+v, want the guard's refusal", recs[0])
	}
	if n := len(rc.got()); n != 0 {
		t.Fatalf("the receiver behind a refused address got %d requests", n)
	}
}

// TestSubNotifierTakesOverTheOldConsumer: upgrading from the version
// before subscriptions, sub_notifier starts where the old dispatcher
// consumer stood, and the old consumer goes.
func TestSubNotifierTakesOverTheOldConsumer(t *testing.T) {
	t.Parallel()
	secret, text := mustSecretText(t)
	rc := &receiver{respond: status(200)}
	url := startReceiver(t, rc).URL
	p := newPlatform(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.js.CreateStream(ctx, natsx.OrdersStream(1)); err != nil {
		t.Fatal(err)
	}
	old, err := p.js.CreateConsumer(ctx, natsx.StreamOrders, jetstream.ConsumerConfig{
		Durable: "dispatcher", FilterSubject: "orders.paid.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		p.publish("")
	}
	b, err := old.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var later []string
	for range 2 {
		e, _ := p.publish("")
		later = append(later, e.ID)
	}
	if _, _, err := p.reg.Ensure(ctx, registry.Notifier(url, []string{text}, 4)); err != nil {
		t.Fatal(err)
	}
	p.replica()
	testkit.Eventually(t, 10*time.Second, "the two events the old consumer had not delivered", func() bool { return len(rc.got()) == 2 })
	time.Sleep(500 * time.Millisecond)
	got := rc.got()
	ids := map[string]bool{}
	for _, r := range got {
		ids[r.header.Get(webhook.HeaderID)] = true
	}
	if len(got) != 2 || !ids[later[0]] || !ids[later[1]] {
		t.Fatalf("sub_notifier delivered %d events (%v), want only the 2 after the old consumer's ack floor", len(got), ids)
	}
	if err := verify(got[0], secret); err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.Consumer(ctx, natsx.StreamOrders, "dispatcher"); err == nil {
		t.Fatal("the old dispatcher consumer is still there")
	}
}
