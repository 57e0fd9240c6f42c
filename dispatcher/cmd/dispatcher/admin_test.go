package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/natstest"
)

// TestRunServesTheAdminAPI: the admin API is on DISPATCHER_ADDR behind
// ADMIN_TOKEN, and the dispatcher ensures sub_notifier at start, signed
// with WEBHOOK_SECRET.
func TestRunServesTheAdminAPI(t *testing.T) {
	srv := natstest.RunServer(t)
	secret := mustSecret(t)
	hook := "http://127.0.0.1:1/webhook/order-paid"
	addr, _ := started(t, map[string]string{
		"NATS_URL": srv.URL(), "DISPATCHER_ADDR": "127.0.0.1:0",
		"NOTIFICATION_WEBHOOK_URL": hook, "WEBHOOK_SECRET": secret,
	})
	base := "http://" + addr + "/v1/subscriptions/sub_notifier"
	get := func(url, token string) (int, []byte) { return adminRequest(http.MethodGet, url, token, "") }
	if code, _ := get(base, ""); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d, want 401", code)
	}
	var body []byte
	eventually(t, 10*time.Second, "sub_notifier to be ensured", func() bool {
		var code int
		code, body = get(base, required["ADMIN_TOKEN"])
		return code == http.StatusOK
	})
	var sub struct {
		URL        string   `json:"url"`
		EventTypes []string `json:"event_types"`
		Status     string   `json:"status"`
	}
	if err := json.Unmarshal(body, &sub); err != nil || sub.URL != hook || len(sub.EventTypes) != 1 || sub.EventTypes[0] != "order.paid" || sub.Status != "enabled" {
		t.Fatalf("sub_notifier = %s (%v)", body, err)
	}
	code, body := get(base+"/secret", required["ADMIN_TOKEN"])
	if code != http.StatusOK || !strings.Contains(string(body), `"secret":"`+secret+`"`) {
		t.Fatalf("sub_notifier's secret: %d; it must be WEBHOOK_SECRET", code)
	}
}

// adminRequest sends one admin API request with token (none when empty)
// and a JSON body (none when empty), and returns the status (0 when the
// server did not answer) and the body.
func adminRequest(method, url, token, body string) (int, []byte) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
