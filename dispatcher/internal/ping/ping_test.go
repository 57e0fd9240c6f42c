package ping_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/ping"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/webhook"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

type env struct {
	*platformtest.Env
	reg *registry.Registry
}

func start(t *testing.T) env {
	t.Helper()
	e := platformtest.Start(t)
	reg, err := registry.New(e.JS, [32]byte{1}, 1, slog.New(slog.DiscardHandler), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Provision(platformtest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	return env{Env: e, reg: reg}
}

func (e env) subscribe(t *testing.T, url string) (registry.Entry, string) {
	t.Helper()
	types := []string{"order.paid"}
	entry, secret, err := e.reg.Create(platformtest.Ctx(t), subscription.Fields{URL: &url, EventTypes: &types})
	if err != nil {
		t.Fatal(err)
	}
	return entry, secret
}

func pinger(e env, guard *ssrf.Guard) *ping.Pinger {
	return &ping.Pinger{Client: guard.Client(2*time.Second, 1), Attempts: attempt.NewLog(e.JS, slog.New(slog.DiscardHandler)),
		UserAgent: "jethook/test", Logger: slog.New(slog.DiscardHandler)}
}

// logged waits for the attempt of eventID and returns it as read back.
func logged(t *testing.T, e env, subID, eventID string) attempt.Record {
	t.Helper()
	var got []attempt.Record
	testkit.Eventually(t, 10*time.Second, "the ping's attempt record", func() bool {
		p, err := attempt.Read(platformtest.Ctx(t), e.JS, attempt.Query{SubscriptionID: subID, EventID: eventID, Limit: 5})
		got = p.Records
		return err == nil && len(got) == 1
	})
	return got[0]
}

// TestPingSignsAndRecords: the receiver gets a webhook.test that verifies
// with the subscription's secret, and the attempt is in the log.
func TestPingSignsAndRecords(t *testing.T) {
	e := start(t)
	var mu sync.Mutex
	var got event.WebhookTest
	var agent string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		agent = r.Header.Get("User-Agent")
		_ = json.Unmarshal(body, &got)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	entry, secretText := e.subscribe(t, srv.URL+"/hook")
	secret, err := webhook.ParseSecret(secretText)
	if err != nil {
		t.Fatal(err)
	}
	// Verify with the official receiving code, the secret as shown.
	v := webhook.Verifier{Secrets: []webhook.Secret{secret}}
	srv.Config.Handler = v.Middleware(srv.Config.Handler)

	rec, err := pinger(e, ssrf.New(loopback)).Ping(platformtest.Ctx(t), entry)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if rec.Status != http.StatusNoContent || rec.Outcome != attempt.OutcomeDelivered || rec.Error != "" ||
		got.Type != event.TypeWebhookTest || got.ID != rec.EventID || got.Data.SubscriptionID != entry.Subscription.ID ||
		agent != "jethook/test" {
		t.Fatalf("ping = %+v; the receiver got %+v from %q", rec, got, agent)
	}
	if r := logged(t, e, entry.Subscription.ID, rec.EventID); r.Source != attempt.SourcePing || r.Status != 204 || r.Attempt != 1 {
		t.Fatalf("logged %+v", r)
	}
}

// TestPingFailures: a failing receiver and a refused address are the
// attempt's outcome, in clear words, with the start of the answer; the
// URL itself never shows in the error.
func TestPingFailures(t *testing.T) {
	e := start(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":"database down"}`+strings.Repeat("x", 4000))
	}))
	defer srv.Close()

	failing, _ := e.subscribe(t, srv.URL+"/hook?token=hunter2")
	rec, err := pinger(e, ssrf.New(loopback)).Ping(platformtest.Ctx(t), failing)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != 500 || rec.Outcome != attempt.OutcomeFailed || rec.Error != "receiver answered 500 Internal Server Error" ||
		!strings.HasPrefix(rec.Response, `{"error":"database down"}`) || len(rec.Response) != attempt.MaxResponse {
		t.Fatalf("ping of a failing receiver = %+v", rec)
	}

	// Without 127.0.0.0/8 allowed, the guard refuses the dial.
	rec, err = pinger(e, ssrf.New(nil)).Ping(platformtest.Ctx(t), failing)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != 0 || rec.Outcome != attempt.OutcomeFailed || !strings.Contains(rec.Error, "refused: loopback address") ||
		strings.Contains(rec.Error, "hunter2") {
		t.Fatalf("ping of a refused address = %+v", rec)
	}
	if r := logged(t, e, failing.Subscription.ID, rec.EventID); r.Error != rec.Error {
		t.Fatalf("logged %+v", r)
	}
	if n := e.Count(t, natsx.StreamAttempts, natsx.AttemptFilter(failing.Subscription.ID)); n != 2 {
		t.Fatalf("%d attempts logged, want 2", n)
	}
}
