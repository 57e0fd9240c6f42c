package deliver_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/config"
	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/shared/webhook"
)

// TestRetryAfterOutageWithDefaults: with the dispatcher's default settings,
// a receiver that answers 503 with Retry-After: 1 for 25 s (as the notifier
// does, with Retry-After: 5, while it has lost NATS) and then recovers gets
// every event of that window exactly once, and none is dead-lettered.
// Retry-After is a floor under the backoff, not a replacement for it, so a
// short one cannot burn the fifteen attempts in fifteen seconds; and the
// circuit breaker, which opens after ten failures, holds the rest back
// without spending their attempts.
func TestRetryAfterOutageWithDefaults(t *testing.T) {
	t.Parallel()
	const outage = 25 * time.Second
	var recovered atomic.Bool
	var mu sync.Mutex
	answered := map[string][]int{} // statuses per event id, in order
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		if !recovered.Load() {
			w.Header().Set("Retry-After", "1")
			status = http.StatusServiceUnavailable
		}
		mu.Lock()
		id := r.Header.Get(webhook.HeaderID)
		answered[id] = append(answered[id], status)
		mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	raw, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			"WEBHOOK_SECRET": raw, "NOTIFICATION_WEBHOOK_URL": srv.URL + "/webhook", "ALLOWED_NETWORKS": "127.0.0.0/8",
			"ADMIN_TOKEN": "deliver-test-admin-token-0123456789ab", "SECRETS_KEY": "ZGVsaXZlciB0ZXN0IHNlY3JldHMga2V5IDMyIGJ5dGU=",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := webhook.ParseSecret(raw)
	if err != nil {
		t.Fatal(err)
	}
	texts.Lock()
	texts.m = append(texts.m, secretText{secret, raw})
	texts.Unlock()
	h := newHarness(t, &setup{
		Settings: deliver.Settings{
			RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, MaxDeliver: cfg.MaxDeliver, HTTPTimeout: cfg.HTTPTimeout,
			Replicas: 1, RedeliverConcurrency: cfg.Concurrency, Timings: cfg.Timings(),
			Breaker: deliver.BreakerSettings{Failures: cfg.BreakerFailures, Cooloff: cfg.BreakerCooloff, CooloffMax: cfg.BreakerCooloffMax, DisableAfter: cfg.DisableAfter},
		},
		URL: cfg.WebhookURL, Secrets: []webhook.Secret{secret}, Concurrency: cfg.Concurrency,
	})
	h.start(t)
	const events = 20
	var ids []string
	for range events {
		e, _ := h.publish(t)
		ids = append(ids, e.ID)
	}
	time.AfterFunc(outage, func() { recovered.Store(true) })

	// The last retry before recovery may be scheduled up to 32 s after
	// the outage ends (attempt 6 of the default backoff).
	eventually(t, outage+90*time.Second, "every event of the outage delivered", func() bool {
		return h.consumerIdle(t)
	})
	if n := len(h.deadLetters(t)); n != 0 {
		t.Fatalf("%d events dead-lettered during a 25 s outage with Retry-After: 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		got := answered[id]
		// Attempts at about 0, 1, 3, 7, 15 s and so on, or none while the
		// circuit breaker holds the events back (it opens after ten
		// failures in a row), then the one that succeeds.
		if len(got) < 1 || len(got) > 8 || got[len(got)-1] != http.StatusOK || slices.Index(got, http.StatusOK) != len(got)-1 {
			t.Errorf("event %s was answered %v, want 503s, then one 200", id, got)
		}
	}
	if info := h.consumerInfo(t); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("not every event was delivered: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
	}
}
