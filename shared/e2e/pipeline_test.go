package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/webhook"
)

// TestOrderBecomesOneEmail: one order, one email to the customer naming the
// order; GET /orders/{id} shows it paid.
func TestOrderBecomesOneEmail(t *testing.T) {
	s := startSystem(t, options{})
	o := s.createOrder("", "ada@example.com")

	m := s.waitEmail(o.OrderID, 20*time.Second)
	if len(m.To) != 1 || m.To[0] != "ada@example.com" {
		t.Fatalf("email recipients = %v", m.To)
	}
	if !strings.Contains(m.Header.Get("Message-Id"), o.EventID) {
		t.Fatalf("Message-ID %q is not derived from event id %s", m.Header.Get("Message-Id"), o.EventID)
	}
	if !strings.Contains(m.Body, "21.00 USD") || !strings.Contains(m.Body, "Book") {
		t.Fatalf("email body lacks amount or product:\n%s", m.Body)
	}

	resp, err := http.Get(s.ordersURL + "/orders/" + o.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got createdOrder
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 || got != o || got.Status != "paid" {
		t.Fatalf("GET /orders/%s = %d %+v (%v), want %+v", o.OrderID, resp.StatusCode, got, err, o)
	}
	s.settle(20 * time.Second)
	if n := len(s.emailsFor(o.OrderID)); n != 1 {
		t.Fatalf("%d emails for one order", n)
	}
}

// TestReceiverOutage: the receiver first does not listen, then answers 503;
// when it recovers the customer gets exactly one email, and the attempts
// were spaced by the backoff rather than hammered.
func TestReceiverOutage(t *testing.T) {
	s := startSystem(t, options{proxyDown: true, dispatcherEnv: map[string]string{"RETRY_BASE": "200ms", "RETRY_MAX": "1s"}})
	s.proxy.mode.Store(mode503)
	o := s.createOrder("", "bob@example.com")

	// Connection refused first: the dispatcher logs failed attempts.
	eventually(t, 10*time.Second, "a refused delivery attempt", func() bool {
		return strings.Contains(s.dispatcher.out.String(), "refused")
	})
	s.proxy.listen(t)
	eventually(t, 15*time.Second, "three 503 answers", func() bool { return len(s.proxy.attemptsFor(o.EventID)) >= 3 })
	s.proxy.mode.Store(modePass)
	s.waitEmail(o.OrderID, 20*time.Second)
	s.settle(20 * time.Second)

	if n := len(s.emailsFor(o.OrderID)); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
	at := s.proxy.attemptsFor(o.EventID)
	for i := 1; i < len(at); i++ {
		// Jitter keeps each delay in [d/2, d] with d ≥ RETRY_BASE.
		if gap := at[i].Sub(at[i-1]); gap < 100*time.Millisecond {
			t.Fatalf("attempts %d and %d only %s apart: no backoff", i, i+1, gap)
		}
	}
	if len(at) > 15 {
		t.Fatalf("%d attempts reached the receiver: hot loop", len(at))
	}
}

// TestRetriesExhausted: a receiver that always fails gets MAX_DELIVER
// attempts; then the event is in DEADLETTER with its reasons and no email
// was sent.
func TestRetriesExhausted(t *testing.T) {
	s := startSystem(t, options{dispatcherEnv: map[string]string{"MAX_DELIVER": "3", "RETRY_BASE": "50ms", "RETRY_MAX": "100ms"}})
	s.proxy.mode.Store(mode500)
	o := s.createOrder("", "cy@example.com")

	ctx := context.Background()
	var hdr map[string][]string
	eventually(t, 20*time.Second, "the dead letter", func() bool {
		st, err := s.js.Stream(ctx, "DEADLETTER")
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, "deadletter.sub_notifier.orders.paid."+o.OrderID)
		if err != nil {
			return false
		}
		hdr = m.Header
		e, err := event.Decode(m.Data)
		return err == nil && e.ID == o.EventID
	})
	get := func(k string) string {
		if v := hdr[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if get("Jethook-Original-Subject") != "orders.paid."+o.OrderID || get("Jethook-Attempts") != "3" ||
		get("Jethook-Last-Status") != "500" || get("Jethook-Original-Sequence") == "" || get("Jethook-Last-Error") == "" {
		t.Fatalf("dead-letter headers = %v", hdr)
	}
	if n := len(s.proxy.attemptsFor(o.EventID)); n != 3 {
		t.Fatalf("%d attempts, want MAX_DELIVER=3", n)
	}
	s.settle(10 * time.Second)
	if n := len(s.mail.Messages()); n != 0 {
		t.Fatalf("%d emails for a dead-lettered event", n)
	}
}

func signedWebhook(t *testing.T, secret string, e event.OrderPaid) (http.Header, []byte) {
	t.Helper()
	body, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return signedWebhookBody(t, secret, e.ID, body)
}

// signedWebhookBody signs any body as the dispatcher would.
func signedWebhookBody(t *testing.T, secret, id string, body []byte) (http.Header, []byte) {
	t.Helper()
	secrets, err := webhook.ParseSecrets(secret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	webhook.SetHeaders(h, secrets, id, time.Now(), body)
	return h, body
}

func postWebhook(t *testing.T, url string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/webhook/order-paid", strings.NewReader(string(body)))
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func newEvent(t *testing.T, email string) event.OrderPaid {
	t.Helper()
	e := testkit.OrderPaid(t)
	e.Data.CustomerEmail = email
	return e
}

// TestForgeriesRejected: forged webhooks get 403 and never an email.
func TestForgeriesRejected(t *testing.T) {
	s := startSystem(t, options{})
	e := newEvent(t, "eve@example.com")
	other, _ := webhook.GenerateSecret()

	valid := func() (http.Header, []byte) { return signedWebhook(t, s.secret, e) }
	tests := []struct {
		name  string
		forge func() (http.Header, []byte)
	}{
		{"no signature", func() (http.Header, []byte) { h, b := valid(); h.Del(webhook.HeaderSignature); return h, b }},
		{"wrong secret", func() (http.Header, []byte) { return signedWebhook(t, other, e) }},
		{"tampered body", func() (http.Header, []byte) {
			h, b := valid()
			return h, []byte(strings.Replace(string(b), `"quantity":2`, `"quantity":3`, 1))
		}},
		{"stale timestamp", func() (http.Header, []byte) {
			body, _ := e.Marshal()
			secrets, _ := webhook.ParseSecrets(s.secret)
			h := http.Header{"Content-Type": {"application/json"}}
			webhook.SetHeaders(h, secrets, e.ID, time.Now().Add(-10*time.Minute), body)
			return h, body
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := tt.forge()
			status, body := postWebhook(t, s.notifyURL, h, b)
			if status != http.StatusForbidden {
				t.Fatalf("status = %d %s, want 403", status, body)
			}
		})
	}
	// A genuine order afterwards is the barrier: once its email is there and
	// the queue is empty, any email from a forgery would have been sent too.
	o := s.createOrder("", "ada@example.com")
	s.waitEmail(o.OrderID, 20*time.Second)
	s.settle(20 * time.Second)
	if n := len(s.mail.Messages()); n != 1 {
		t.Fatalf("%d emails, want only the genuine one", n)
	}
}

// TestDuplicateWebhooks: the same webhook twice, and again after its
// NOTIFICATIONS message is gone, still makes one email.
func TestDuplicateWebhooks(t *testing.T) {
	s := startSystem(t, options{})
	e := newEvent(t, "dup@example.com")
	for i := 0; i < 2; i++ {
		h, b := signedWebhook(t, s.secret, e)
		if status, body := postWebhook(t, s.notifyURL, h, b); status != 200 {
			t.Fatalf("delivery %d = %d %s", i+1, status, body)
		}
	}
	s.waitEmail(e.Data.OrderID, 20*time.Second)
	s.settle(20 * time.Second)

	// The work-queue message is deleted now, so JetStream's dedup cannot
	// help; the notifier's idempotency store must.
	h, b := signedWebhook(t, s.secret, e)
	status, body := postWebhook(t, s.notifyURL, h, b)
	if status != 200 || !strings.Contains(body, "duplicate") {
		t.Fatalf("late redelivery = %d %s, want 200 duplicate", status, body)
	}
	o := s.createOrder("", "barrier@example.com")
	s.waitEmail(o.OrderID, 20*time.Second)
	s.settle(20 * time.Second)
	if n := len(s.emailsFor(e.Data.OrderID)); n != 1 {
		t.Fatalf("%d emails for one event", n)
	}
}

// TestIdempotencyKey: the same POST twice with one key is one order, one
// event and one email.
func TestIdempotencyKey(t *testing.T) {
	s := startSystem(t, options{})
	a := s.createOrder("retry-me", "ida@example.com")
	b := s.createOrder("retry-me", "ida@example.com")
	if a != b {
		t.Fatalf("retry returned another order: %+v vs %+v", a, b)
	}
	s.waitEmail(a.OrderID, 20*time.Second)
	s.settle(20 * time.Second)
	st, _ := s.js.Stream(context.Background(), "ORDERS")
	info, _ := st.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Fatalf("ORDERS holds %d events, want 1", info.State.Msgs)
	}
	if n := len(s.mail.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

// TestDispatcherKilledMidDelivery: the notifier got the webhook but the
// dispatcher is killed before it sees the answer or acks. After a restart
// the event is redelivered (after AckWait) and the notifier's idempotency
// keeps it at one email.
func TestDispatcherKilledMidDelivery(t *testing.T) {
	s := startSystem(t, options{dispatcherEnv: map[string]string{"HTTP_TIMEOUT": "3s"}})
	s.proxy.mode.Store(modeForwardAndHang)
	o := s.createOrder("", "kim@example.com")
	eventually(t, 10*time.Second, "the first delivery", func() bool { return len(s.proxy.attemptsFor(o.EventID)) == 1 })
	s.dispatcher.kill()
	s.waitEmail(o.OrderID, 20*time.Second)

	s.proxy.mode.Store(modePass)
	s.dispatcher.start()
	eventually(t, 30*time.Second, "the redelivery after AckWait", func() bool { return len(s.proxy.attemptsFor(o.EventID)) >= 2 })
	s.settle(30 * time.Second)
	if n := len(s.emailsFor(o.OrderID)); n != 1 {
		t.Fatalf("%d emails after a dispatcher crash, want 1", n)
	}
}

// TestNATSRestartLosesNothing: events acknowledged while the notifier is
// down survive a restart of the NATS server and are delivered afterwards.
func TestNATSRestartLosesNothing(t *testing.T) {
	s := startSystem(t, options{})
	s.notifier.kill()
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, s.createOrder("", fmt.Sprintf("n%d@example.com", i)).OrderID)
	}
	s.nats.Restart(t)
	s.notifier.start()
	s.waitReady()
	for _, id := range ids {
		s.waitEmail(id, 30*time.Second)
	}
	s.settle(30 * time.Second)
	for _, id := range ids {
		if n := len(s.emailsFor(id)); n != 1 {
			t.Fatalf("order %s has %d emails", id, n)
		}
	}
}

// TestGracefulStop: SIGTERM stops each service with exit code 0 within 10 s.
func TestGracefulStop(t *testing.T) {
	s := startSystem(t, options{})
	o := s.createOrder("", "term@example.com")
	s.waitEmail(o.OrderID, 20*time.Second)
	for _, p := range []*proc{s.orders, s.dispatcher, s.notifier} {
		err, ok := p.terminate(10 * time.Second)
		if !ok {
			t.Fatalf("%s did not exit within 10 s of SIGTERM", p.name)
		}
		if err != nil {
			t.Fatalf("%s exited with %v on SIGTERM", p.name, err)
		}
	}
}

// TestInvalidSettings: each binary stops at start with one line naming the
// bad variable and a non-zero exit.
func TestInvalidSettings(t *testing.T) {
	secret, _ := webhook.GenerateSecret()
	tests := []struct {
		bin, name, value string
	}{
		{"orders", "ORDERS_ADDR", "nowhere"},
		{"orders", "NATS_URL", "banana"},
		{"dispatcher", "RETRY_BASE", "banana"},
		{"dispatcher", "MAX_DELIVER", "-1"},
		{"dispatcher", "WEBHOOK_SECRET", "plaintext"},
		{"dispatcher", "ADMIN_TOKEN", "too-short-to-be-a-token"},
		{"dispatcher", "SECRETS_KEY", "c2l4dGVlbiBieXRlcyBsb25n"},
		{"dispatcher", "ALLOWED_NETWORKS", "localhost"},
		{"notifier", "NOTIFIER_ADDR", "banana"},
		{"notifier", "WEBHOOK_SECRET", ""},
	}
	for _, tt := range tests {
		t.Run(tt.bin+" "+tt.name, func(t *testing.T) {
			env := map[string]string{"WEBHOOK_SECRET": secret, "NATS_URL": "nats://127.0.0.1:1",
				"ORDERS_ADDR": "127.0.0.1:0", "NOTIFIER_ADDR": "127.0.0.1:0", "DISPATCHER_ADDR": "127.0.0.1:0"}
			for k, v := range adminEnv {
				env[k] = v
			}
			env[tt.name] = tt.value
			p := newProc(t, tt.bin, env)
			p.start()
			var err error
			select {
			case err = <-p.done:
				p.cmd = nil
			case <-time.After(10 * time.Second):
				t.Fatal("did not exit")
			}
			ee, ok := err.(interface{ ExitCode() int })
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("exit = %v, want non-zero", err)
			}
			out := strings.TrimSpace(p.out.String())
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.name) {
				t.Fatalf("output = %q, want one line naming %s", out, tt.name)
			}
			if strings.Contains(out, strings.TrimPrefix(secret, "whsec_")) {
				t.Fatal("the secret was printed")
			}
		})
	}
}

// TestSIGTERMUnderLoad: SIGTERM while clients are posting orders leaves
// nothing half-done. Every request either got its answer (a 201 whose event
// is in ORDERS, or an error the client can retry) or never reached the
// service; the process exits 0 within 10 s; and after a restart every
// acknowledged order still becomes exactly one email.
func TestSIGTERMUnderLoad(t *testing.T) {
	s := startSystem(t, options{})
	type result struct {
		orderID string
		status  int
	}
	results := make(chan result, 1000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"product_name":"Book","quantity":1,"price_per_item":1,"customer_email":"w%d-%d@example.com"}`, w, i)
				resp, err := client.Post(s.ordersURL+"/orders", "application/json", strings.NewReader(body))
				if err != nil {
					continue // refused: the service was no longer accepting
				}
				var o createdOrder
				_ = json.NewDecoder(resp.Body).Decode(&o)
				resp.Body.Close()
				results <- result{o.OrderID, resp.StatusCode}
			}
		}(w)
	}
	eventually(t, 10*time.Second, "some orders under load", func() bool { return len(results) >= 20 })
	err, exited := s.orders.terminate(10 * time.Second)
	close(stop)
	wg.Wait()
	close(results)
	if !exited {
		t.Fatal("orders did not exit within 10 s of SIGTERM under load")
	}
	if err != nil {
		t.Fatalf("orders exited with %v under load", err)
	}

	var acked []string
	for r := range results {
		switch {
		case r.status == http.StatusCreated:
			acked = append(acked, r.orderID)
		case r.status >= 500 && r.status != http.StatusServiceUnavailable:
			t.Errorf("a request was answered %d during shutdown", r.status)
		}
	}
	st, _ := s.js.Stream(context.Background(), "ORDERS")
	for _, id := range acked {
		if _, err := st.GetLastMsgForSubject(context.Background(), event.Subject(id)); err != nil {
			t.Fatalf("order %s got a 201 but has no event: %v", id, err)
		}
	}
	s.orders.start()
	s.waitReady()
	for _, id := range acked {
		s.waitEmail(id, 30*time.Second)
	}
	s.settle(30 * time.Second)
	for _, id := range acked {
		if n := len(s.emailsFor(id)); n != 1 {
			t.Fatalf("order %s has %d emails", id, n)
		}
	}
	t.Logf("%d orders acknowledged under load before and during SIGTERM", len(acked))
}

// TestClusterNodeLoss: on a three-node cluster with STREAM_REPLICAS=3 (the
// deploy/docker-compose.cluster.yml setup), every stream, consumer and
// bucket is replicated three times, and losing any one node loses no order
// and stops nothing: orders taken before, during and after the outage each
// become exactly one email.
func TestClusterNodeLoss(t *testing.T) {
	s := startSystem(t, options{cluster: true})
	ctx := context.Background()
	for _, name := range []string{"ORDERS", "NOTIFICATIONS", "DEADLETTER", "KV_orders", "KV_notifier_processed"} {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("%s has %d replicas, want 3", name, r)
		}
	}
	var ids []string
	create := func(n int, tag string) {
		for i := 0; i < n; i++ {
			ids = append(ids, s.createOrderRetrying(fmt.Sprintf("%s-%d", tag, i), fmt.Sprintf("%s%d@example.com", tag, i)).OrderID)
		}
	}
	create(3, "before")
	// Take down the node that leads ORDERS, the worst one to lose.
	st, _ := s.js.Stream(ctx, "ORDERS")
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := -1
	for i, srv := range s.cluster.Servers {
		if srv.Name() == info.Cluster.Leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no node leads ORDERS (leader %q)", info.Cluster.Leader)
	}
	s.cluster.Servers[victim].Shutdown()
	create(3, "during")
	s.cluster.Servers[victim].Restart(t)
	create(3, "after")
	// A message the server handed out just as its leader went away is
	// handed out again after the email consumer's AckWait (30 s); the
	// wait allows for that on a loaded machine.
	for _, id := range ids {
		s.waitEmail(id, 90*time.Second)
	}
	s.settle(60 * time.Second)
	for _, id := range ids {
		if n := len(s.emailsFor(id)); n != 1 {
			t.Fatalf("order %s has %d emails", id, n)
		}
	}
}
