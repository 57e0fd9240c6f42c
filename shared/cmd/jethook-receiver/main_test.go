package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/webhook"
)

// TestReceiver: a signed webhook is printed and answered with the status
// it is told to; a forged one is refused; the status can change.
func TestReceiver(t *testing.T) {
	raw, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := webhook.ParseSecret(raw)
	addr := testkit.FreeAddr(t)
	out := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", addr, "-secret", raw}, func(string) string { return "" }, out)
	}()
	t.Cleanup(func() { cancel(); <-done })
	testkit.Eventually(t, 5*time.Second, "the receiver listening", func() bool { return strings.Contains(out.String(), "listening") })

	send := func(secrets []webhook.Secret) int {
		t.Helper()
		body := `{"id":"evt_1","type":"order.paid"}`
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/webhook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		webhook.SetHeaders(req.Header, secrets, "evt_1", time.Now(), []byte(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send([]webhook.Secret{secret}); got != http.StatusOK {
		t.Fatalf("signed webhook answered %d, want 200", got)
	}
	other, _ := webhook.ParseSecret(mustSecret(t))
	if got := send([]webhook.Secret{other}); got != http.StatusForbidden {
		t.Fatalf("forged webhook answered %d, want 403", got)
	}
	resp, err := http.Post("http://"+addr+"/status", "text/plain", strings.NewReader("503"))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /status = %v %v", resp, err)
	}
	if got := send([]webhook.Secret{secret}); got != http.StatusServiceUnavailable {
		t.Fatalf("after POST /status 503, answered %d", got)
	}
	if !strings.Contains(out.String(), "received evt_1, answered 200") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func mustSecret(t *testing.T) string {
	raw, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
