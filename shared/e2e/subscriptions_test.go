package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/webhook"
)

// These tests drive subscriptions the way their users do: orders through
// POST /orders, subscriptions through the admin API over HTTP with the
// bearer token, and receivers on 127.0.0.1 that verify every webhook with
// shared/webhook. NATS is only read, to see what operators see with the
// nats CLI, except where an event of another type than order.paid is
// needed, which no service publishes yet.

// subscriptionView is a subscription as the admin API answers it.
type subscriptionView struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	EventTypes     []string `json:"event_types"`
	Status         string   `json:"status"`
	DisabledReason string   `json:"disabled_reason"`
	// Secret is only in the answer to a create.
	Secret string `json:"secret"`
}

// attemptView is one attempt of the attempt log as the admin API answers
// it.
type attemptView struct {
	SubscriptionID string `json:"subscription_id"`
	EventID        string `json:"event_id"`
	Status         int    `json:"status"`
	Outcome        string `json:"outcome"`
	Error          string `json:"error"`
	Source         string `json:"source"`
}

// admin returns the admin API of the system's first dispatcher.
func (s *system) admin() *adminAPI { return newAdminAPI(s.t, s) }

// adminAt returns the admin API of the dispatcher at addr.
func (s *system) adminAt(addr string) *adminAPI {
	return &adminAPI{t: s.t, base: "http://" + addr, token: adminEnv["ADMIN_TOKEN"]}
}

// call sends a JSON request with the token and fails the test unless the
// answer has status want; out, when not nil, gets the answer decoded.
func (a *adminAPI) call(method, path, body string, want int, out any) {
	a.t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	var h http.Header
	if method == http.MethodPatch {
		h = http.Header{"If-Match": {"*"}}
	}
	got, b := a.do(method, path, ct, body, h, false)
	if got != want {
		a.t.Fatalf("%s %s %s = %d %s, want %d", method, path, body, got, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: answer %s: %v", method, path, b, err)
		}
	}
}

// subscriptionOf reads one subscription.
func (a *adminAPI) subscriptionOf(id string) subscriptionView {
	a.t.Helper()
	var v subscriptionView
	a.call(http.MethodGet, "/v1/subscriptions/"+id, "", http.StatusOK, &v)
	return v
}

// attempts reads a subscription's attempt log, newest first, filtered by
// the query (such as "event_id=evt_…").
func (a *adminAPI) attempts(subID, query string) []attemptView {
	a.t.Helper()
	var l struct{ Data []attemptView }
	a.call(http.MethodGet, "/v1/subscriptions/"+subID+"/attempts?"+query, "", http.StatusOK, &l)
	return l.Data
}

// subscribe creates a subscription to rc for the event types through the
// first dispatcher, makes rc trust its secret, and adds the secret to
// those no process may log.
func (s *system) subscribe(rc *receiver, types ...string) subscriptionView {
	s.t.Helper()
	b, _ := json.Marshal(map[string]any{"url": rc.url(), "event_types": types})
	var v subscriptionView
	s.admin().call(http.MethodPost, "/v1/subscriptions", string(b), http.StatusCreated, &v)
	if !strings.HasPrefix(v.Secret, "whsec_") || v.Status != "enabled" {
		s.t.Fatalf("created subscription %+v, want an enabled one with its secret", v)
	}
	s.neverLogged("the secret of "+v.ID, v.Secret)
	rc.trust(v.Secret)
	return v
}

// consumerInfo reads a subscription's consumer wh-<id> on ORDERS, as
// `nats consumer info ORDERS wh-<id>` shows it; nil when it does not exist.
func (s *system) consumerInfo(subID string) *jetstream.ConsumerInfo {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := s.js.Consumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(subID))
	if err != nil {
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

// waitPaused waits until the subscription's consumer is paused on the
// server, or, with paused false, until it is not.
func (s *system) waitPaused(subID string, paused bool) {
	s.t.Helper()
	what := map[bool]string{true: "paused", false: "resumed"}[paused]
	eventually(s.t, 10*time.Second, "consumer "+natsx.SubscriptionConsumer(subID)+" "+what, func() bool {
		info := s.consumerInfo(subID)
		return info != nil && info.Paused == paused
	})
}

// announced reports whether OPS holds an event of kind (paused, disabled,
// …) about the subscription.
func (s *system) announced(kind, subID string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, natsx.StreamOps)
	if err != nil {
		return false
	}
	_, err = st.GetLastMsgForSubject(ctx, natsx.OpsSubject(kind, subID))
	return err == nil
}

// waitAccepted waits until rc has accepted each event at least once.
func waitAccepted(t *testing.T, rc *receiver, what string, eventIDs ...string) {
	t.Helper()
	eventually(t, 20*time.Second, what, func() bool {
		got := rc.accepted()
		for _, id := range eventIDs {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
}

// deliveredBy reports whether the dispatcher p logged the delivery of the
// event to the subscription.
func deliveredBy(p *proc, subID, eventID string) bool {
	return loggedAbout(p, subID, `"msg":"webhook delivered"`, `"event_id":"`+eventID+`"`) != ""
}

// loggedAbout returns the first line p logged about the subscription that
// holds every one of texts, or "".
func loggedAbout(p *proc, subID string, texts ...string) string {
	for line := range strings.SplitSeq(p.out.String(), "\n") {
		if !strings.Contains(line, `"subscription_id":"`+subID+`"`) {
			continue
		}
		all := true
		for _, text := range texts {
			all = all && strings.Contains(line, text)
		}
		if all {
			return line
		}
	}
	return ""
}

// pacer lets a poll place an order at most once every interval.
type pacer struct {
	every time.Duration
	last  time.Time
}

func (p *pacer) due() bool {
	if time.Since(p.last) < p.every {
		return false
	}
	p.last = time.Now()
	return true
}

// TestTwoSubscriptionsEachGetEveryEvent: two subscriptions both get each
// order's event, with the same webhook-id and the same bytes, each signed
// with its own secret and not the other's; a subscription to "*" also
// gets an event of another type, which one to order.paid does not.
func TestTwoSubscriptionsEachGetEveryEvent(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{})
	paid, all := newReceiver(t), newReceiver(t)
	subPaid, subAll := s.subscribe(paid, "order.paid"), s.subscribe(all, "*")

	var events []string
	for i := range 3 {
		events = append(events, s.createOrder("", fmt.Sprintf("fan%d@example.com", i)).EventID)
	}
	waitAccepted(t, paid, "every event at the order.paid receiver", events...)
	waitAccepted(t, all, "every event at the * receiver", events...)
	for _, id := range events {
		p, a := paid.of(id)[0], all.of(id)[0]
		if string(p.body) != string(a.body) {
			t.Errorf("event %s: the receivers got different bodies:\n%s\n%s", id, p.body, a.body)
		}
		var body struct{ ID string }
		if err := json.Unmarshal(p.body, &body); err != nil || body.ID != id {
			t.Errorf("webhook-id %s carries the body of event %q (%v)", id, body.ID, err)
		}
		if !p.verifiesWith(t, subPaid.Secret) || p.verifiesWith(t, subAll.Secret) {
			t.Errorf("event %s to the order.paid subscription: not signed with its own secret alone", id)
		}
		if !a.verifiesWith(t, subAll.Secret) || a.verifiesWith(t, subPaid.Secret) {
			t.Errorf("event %s to the * subscription: not signed with its own secret alone", id)
		}
	}

	// An event of another type, published on ORDERS as a future service
	// would.
	other := testkit.OrderPaid(t)
	body, _ := json.Marshal(map[string]any{"id": other.ID, "type": "order.refunded", "timestamp": other.Timestamp, "data": other.Data})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.js.Publish(ctx, "orders.refunded."+other.Data.OrderID, body, jetstream.WithMsgID(other.ID)); err != nil {
		t.Fatal(err)
	}
	waitAccepted(t, all, "the order.refunded event at the * receiver", other.ID)
	// An order after it is the barrier: once the order.paid receiver has
	// it, its consumer has gone past the refund.
	barrier := s.createOrder("", "barrier@example.com").EventID
	waitAccepted(t, paid, "the barrier at the order.paid receiver", barrier)
	if n := len(paid.of(other.ID)); n != 0 {
		t.Fatalf("the order.paid subscription got %d requests for an order.refunded event", n)
	}
	var l struct{ Data []attemptView }
	s.admin().call(http.MethodGet, "/v1/events/"+other.ID+"/attempts", "", http.StatusOK, &l)
	if len(l.Data) != 1 || l.Data[0].SubscriptionID != subAll.ID || l.Data[0].Outcome != "delivered" {
		t.Fatalf("attempts of the order.refunded event = %+v, want one delivered to %s only", l.Data, subAll.ID)
	}
}

// TestSecretRotation: after a rotation with a 3-second grace, webhooks
// carry two signatures, and each of the old and the new secret verifies
// them; once the grace is over, only the new secret does.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{})
	rc := newReceiver(t)
	sub := s.subscribe(rc, "order.paid")
	oldSecret := sub.Secret
	path := "/v1/subscriptions/" + sub.ID
	a := s.admin()

	var rotated struct{ Secret string }
	a.call(http.MethodPost, path+"/secret/rotate", `{"grace":"3s"}`, http.StatusOK, &rotated)
	newSecret := rotated.Secret
	s.neverLogged("the rotated secret", newSecret)
	if newSecret == oldSecret || !strings.HasPrefix(newSecret, "whsec_") {
		t.Fatalf("rotation answered secret %q", newSecret)
	}
	rc.trust(oldSecret + "," + newSecret)
	var held struct {
		Secrets []struct {
			Secret    string     `json:"secret"`
			ExpiresAt *time.Time `json:"expires_at"`
		} `json:"secrets"`
	}
	a.call(http.MethodGet, path+"/secret", "", http.StatusOK, &held)
	if len(held.Secrets) != 2 || held.Secrets[0].Secret != newSecret || held.Secrets[0].ExpiresAt != nil ||
		held.Secrets[1].Secret != oldSecret || held.Secrets[1].ExpiresAt == nil {
		t.Fatalf("secrets during the grace = %+v, want the new one and the old one with its expiry", held.Secrets)
	}
	graceEnds := *held.Secrets[1].ExpiresAt
	if left := time.Until(graceEnds); left <= 0 || left > 3*time.Second {
		t.Fatalf("the old secret expires in %s, want within the 3 s grace", left)
	}

	during := s.createOrder("", "grace@example.com").EventID
	waitAccepted(t, rc, "the webhook during the grace", during)
	d := rc.of(during)[0]
	// A webhook received before the grace ended was signed before it too.
	if !d.at.Before(graceEnds) {
		t.Fatalf("the webhook took until %s after the grace to arrive; the machine is too slow to judge the grace", d.at.Sub(graceEnds))
	}
	if !d.verifiesWith(t, oldSecret) || !d.verifiesWith(t, newSecret) {
		t.Fatalf("during the grace: old secret verifies %v, new secret verifies %v; want both (signature %q)",
			d.verifiesWith(t, oldSecret), d.verifiesWith(t, newSecret), d.header.Get(webhook.HeaderSignature))
	}

	eventually(t, 10*time.Second, "the old secret to expire", func() bool {
		a.call(http.MethodGet, path+"/secret", "", http.StatusOK, &held)
		return len(held.Secrets) == 1 && held.Secrets[0].Secret == newSecret && time.Now().After(graceEnds)
	})
	after := s.createOrder("", "after-grace@example.com").EventID
	waitAccepted(t, rc, "the webhook after the grace", after)
	d = rc.of(after)[0]
	if d.verifiesWith(t, oldSecret) || !d.verifiesWith(t, newSecret) {
		t.Fatalf("after the grace: old secret verifies %v, new secret verifies %v; want only the new one",
			d.verifiesWith(t, oldSecret), d.verifiesWith(t, newSecret))
	}
	if n := len(strings.Fields(d.header.Get(webhook.HeaderSignature))); n != 1 {
		t.Fatalf("after the grace the webhook carries %d signatures, want 1", n)
	}
}

// TestChangesReachASecondReplica: with two dispatcher processes running,
// a URL patched through the first reaches the second within a second (its
// deliveries of every event ordered a second after the patch go to the
// new URL), and a subscription deleted through the first loses its
// consumer for good: the second does not provision it again.
func TestChangesReachASecondReplica(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{})
	second, _ := s.startReplica(nil)
	oldRC, newRC := newReceiver(t), newReceiver(t)
	sub := s.subscribe(oldRC, "order.paid")
	newRC.trust(sub.Secret)

	// Both replicas deliver the subscription's events before the patch.
	orders := pacer{every: 100 * time.Millisecond}
	byReplica := func(p *proc) func() bool {
		return func() bool {
			for id := range oldRC.accepted() {
				if deliveredBy(p, sub.ID, id) {
					return true
				}
			}
			if orders.due() {
				s.createOrder("", "warm@example.com")
			}
			return false
		}
	}
	eventually(t, 20*time.Second, "a delivery by the first replica", byReplica(s.dispatcher))
	eventually(t, 20*time.Second, "a delivery by the second replica", byReplica(second))

	var patched subscriptionView
	s.admin().call(http.MethodPatch, "/v1/subscriptions/"+sub.ID, `{"url":"`+newRC.url()+`"}`, http.StatusOK, &patched)
	patchedAt := time.Now()
	if patched.URL != newRC.url() {
		t.Fatalf("PATCH answered url %q", patched.URL)
	}
	// Orders keep coming; those ordered a second after the patch must go
	// to the new URL, whichever replica delivers them. Wait until the
	// second replica has delivered one of them.
	var late []string
	eventually(t, 20*time.Second, "the second replica's delivery to the new URL", func() bool {
		for _, id := range late {
			if deliveredBy(second, sub.ID, id) && newRC.accepted()[id] > 0 {
				return true
			}
		}
		if !orders.due() {
			return false
		}
		ordered := time.Now()
		o := s.createOrder("", "patched@example.com")
		if ordered.Sub(patchedAt) >= time.Second {
			late = append(late, o.EventID)
		}
		return false
	})
	waitAccepted(t, newRC, "every event ordered a second after the patch at the new URL", late...)
	for _, id := range late {
		if n := len(oldRC.of(id)); n != 0 {
			t.Errorf("event %s, ordered a second after the patch, went to the old URL", id)
		}
	}
	first := newRC.deliveries()[0].at.Sub(patchedAt)
	t.Logf("the new URL got its first webhook %s after the patch; %d events ordered a second later all went there", first, len(late))

	s.admin().call(http.MethodDelete, "/v1/subscriptions/"+sub.ID, "", http.StatusNoContent, nil)
	deletedAt := time.Now()
	eventually(t, 5*time.Second, "the consumer removed", func() bool { return s.consumerInfo(sub.ID) == nil })
	t.Logf("the consumer was gone %s after the delete", time.Since(deletedAt))
	// A replica that missed the delete would find its consumer gone under
	// it and provision it again within a second or two; the consumer must
	// stay gone while an order goes through.
	barrier := s.createOrder("", "after-delete@example.com")
	eventually(t, 20*time.Second, "an order through and 3 s since the delete", func() bool {
		if s.consumerInfo(sub.ID) != nil {
			t.Fatal("the deleted subscription's consumer is back: a replica did not see the delete")
		}
		return len(s.proxy.attemptsFor(barrier.EventID)) > 0 && time.Since(deletedAt) > 3*time.Second
	})
	if n := len(oldRC.of(barrier.EventID)) + len(newRC.of(barrier.EventID)); n != 0 {
		t.Fatalf("a deleted subscription got %d requests", n)
	}
	for _, p := range []*proc{s.dispatcher, second} {
		if line := loggedAbout(p, sub.ID, "provisioning it again"); line != "" {
			t.Errorf("a replica provisioned the deleted subscription's consumer again: %s", line)
		}
	}
}

// TestSSRFRefused: a dispatcher whose ALLOWED_NETWORKS is empty refuses a
// subscription to a literal loopback, private or link-local address with
// 422 and stores nothing; a subscription to a name that resolves to
// loopback is accepted, and its deliveries are refused when dialled, with
// the guard's error in the attempt log and no request at the receiver.
func TestSSRFRefused(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{dispatcherEnv: map[string]string{
		"ALLOWED_NETWORKS": "",
		// sub_notifier's URL must pass the start-up check too: a name is
		// only checked when dialled, where it is refused.
		"NOTIFICATION_WEBHOOK_URL": "http://localhost:1/webhook/order-paid",
	}})
	a := s.admin()
	rc := newReceiver(t)
	port := rc.addr[strings.LastIndexByte(rc.addr, ':')+1:]
	for _, target := range []string{
		rc.url(), // a live receiver on 127.0.0.1
		"http://169.254.169.254/latest/meta-data/",
		"http://[::1]:" + port + "/hooks",
		"http://[::ffff:127.0.0.1]:" + port + "/hooks",
		"http://10.0.0.7/hooks",
		"http://0.0.0.0:" + port + "/hooks",
	} {
		status, b := a.json(http.MethodPost, "/v1/subscriptions", `{"url":"`+target+`","event_types":["order.paid"]}`)
		var p struct {
			Errors map[string]string `json:"errors"`
		}
		if status != http.StatusUnprocessableEntity || json.Unmarshal(b, &p) != nil || !strings.Contains(p.Errors["url"], "refused") {
			t.Errorf("POST a subscription to %s = %d %s, want 422 with the refusal under url", target, status, b)
		}
	}
	var l struct{ Data []subscriptionView }
	a.call(http.MethodGet, "/v1/subscriptions", "", http.StatusOK, &l)
	if len(l.Data) != 1 || l.Data[0].ID != "sub_notifier" {
		t.Fatalf("subscriptions after the refusals = %+v, want only sub_notifier", l.Data)
	}
	if len(rc.deliveries()) != 0 {
		t.Fatal("a refused creation reached the receiver")
	}

	// A name passes at creation; it is checked on the address dialled.
	named := strings.Replace(rc.url(), "127.0.0.1", "localhost", 1)
	var sub subscriptionView
	a.call(http.MethodPost, "/v1/subscriptions", `{"url":"`+named+`","event_types":["order.paid"]}`, http.StatusCreated, &sub)
	s.neverLogged("the secret of "+sub.ID, sub.Secret)
	rc.trust(sub.Secret)
	// A patch to a refused literal is refused too, and changes nothing.
	if status, b := a.do(http.MethodPatch, "/v1/subscriptions/"+sub.ID, "application/json",
		`{"url":"`+rc.url()+`"}`, http.Header{"If-Match": {"*"}}, false); status != http.StatusUnprocessableEntity {
		t.Errorf("PATCH to a refused address = %d %s, want 422", status, b)
	}
	if got := a.subscriptionOf(sub.ID).URL; got != named {
		t.Fatalf("url after a refused patch = %q, want %q", got, named)
	}
	o := s.createOrder("", "ssrf@example.com")
	var recs []attemptView
	eventually(t, 20*time.Second, "the refused attempt in the attempt log", func() bool {
		recs = a.attempts(sub.ID, "event_id="+url.QueryEscape(o.EventID))
		return len(recs) > 0
	})
	r := recs[len(recs)-1]
	if r.Status != 0 || r.Outcome != "retry" || !strings.Contains(r.Error, "refused") ||
		!strings.Contains(r.Error, "loopback") || !strings.Contains(r.Error, "ALLOWED_NETWORKS") {
		t.Fatalf("attempt %+v, want a retry with the guard's refusal (loopback, not in ALLOWED_NETWORKS)", r)
	}
	var ping attemptView
	a.call(http.MethodPost, "/v1/subscriptions/"+sub.ID+"/ping", "", http.StatusAccepted, &ping)
	if ping.Outcome != "failed" || !strings.Contains(ping.Error, "refused") {
		t.Fatalf("ping = %+v, want failed with the guard's refusal", ping)
	}
	if n := len(rc.deliveries()); n != 0 {
		t.Fatalf("the receiver behind a refused address got %d requests", n)
	}
	t.Logf("the attempt log says: %s", r.Error)
}
