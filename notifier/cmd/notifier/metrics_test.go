package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/notifier/internal/receive"
	"github.com/jethook/jethook/shared/metrics/metricstest"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/webhook"
)

// TestMetricsAndRequestLog drives webhooks of every kind through the
// service, with a mail server that holds the first email for a while and
// then refuses it, and checks what Prometheus and the log see.
func TestMetricsAndRequestLog(t *testing.T) {
	srv := natstest.RunServer(t)
	mail := smtptest.Start(t)
	mail.Refuse(1)
	held, release := make(chan struct{}), make(chan struct{})
	mail.OnData(func(attempt int) {
		if attempt == 1 {
			close(held)
			<-release
		}
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL(), "SMTP_ADDR": mail.Addr, "LOG_FORMAT": "json"})
	s.waitReady(t)
	scrape := func() metricstest.Families { return metricstest.Scrape(t, s.base+"/metrics") }

	before := scrape()
	for _, outcome := range []string{"accepted", "duplicate", "forged", "invalid", "malformed", "too_large", "unsupported_media_type", "unavailable"} {
		if v, ok := before.Value("jethook_notifier_webhooks_received_total", "outcome", outcome); !ok || v != 0 {
			t.Errorf("before traffic, webhooks_received_total{outcome=%q} = %v (present %v), want 0", outcome, v, ok)
		}
	}

	ev, body := newEvent(t)
	if code, status := s.postWebhook(t, ev.ID, body); code != http.StatusOK || status != "event_received" {
		t.Fatalf("first post: %d %q", code, status)
	}
	if code, status := s.postWebhook(t, ev.ID, body); code != http.StatusOK || status != "duplicate" {
		t.Fatalf("second post: %d %q", code, status)
	}
	forgedSig := postForged(t, s.base, body)
	other, _ := newEvent(t)
	if code, _ := s.postWebhook(t, other.ID, body); code != http.StatusUnprocessableEntity {
		t.Fatalf("id mismatch: %d, want 422", code)
	}
	if code := postOversized(t, strings.TrimPrefix(s.base, "http://")); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized: %d, want 413", code)
	}

	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first email never reached the mail server")
	}
	eventually(t, 5*time.Second, "the email in flight to count as pending", func() bool {
		v, _ := scrape().Value("jethook_notifier_notifications_pending")
		return v == 1
	})
	close(release)

	var fams metricstest.Families
	eventually(t, 10*time.Second, "the email to be sent and the queue to drain", func() bool {
		fams = scrape()
		sent, _ := fams.Value("jethook_notifier_emails_total", "outcome", "sent")
		pending, present := fams.Value("jethook_notifier_notifications_pending")
		return sent == 1 && present && pending == 0
	})
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"accepted", "jethook_notifier_webhooks_received_total", []string{"outcome", "accepted"}, 1},
		{"duplicate", "jethook_notifier_webhooks_received_total", []string{"outcome", "duplicate"}, 1},
		{"forged", "jethook_notifier_webhooks_received_total", []string{"outcome", "forged"}, 1},
		{"invalid", "jethook_notifier_webhooks_received_total", []string{"outcome", "invalid"}, 1},
		{"too large", "jethook_notifier_webhooks_received_total", []string{"outcome", "too_large"}, 1},
		{"malformed", "jethook_notifier_webhooks_received_total", []string{"outcome", "malformed"}, 0},
		{"email refused", "jethook_notifier_emails_total", []string{"outcome", "failed"}, 1},
		{"email sent", "jethook_notifier_emails_total", []string{"outcome", "sent"}, 1},
		{"sends timed", "jethook_notifier_email_duration_seconds", nil, 2},
		{"webhook 200s", "jethook_http_requests_total", []string{"service", "notifier", "method", "POST", "route", receive.Path, "status", "200"}, 2},
		{"webhook 403", "jethook_http_requests_total", []string{"route", receive.Path, "status", "403"}, 1},
		{"webhook 413 before routing", "jethook_http_requests_total", []string{"route", receive.Path, "status", "413"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := fams.Value(tt.metric, tt.labels...)
			if !ok || got != tt.want {
				t.Errorf("%s%v = %v (present %v), want %v", tt.metric, tt.labels, got, ok, tt.want)
			}
		})
	}

	// One line per request on the webhook route, the handler's ids and
	// outcome in it, the 413 included; never a signature.
	var outcomes []string
	sc := bufio.NewScanner(strings.NewReader(s.stdout.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			t.Fatalf("not a JSON log line: %s", sc.Text())
		}
		if msg := fmt.Sprint(rec["msg"]); strings.HasPrefix(msg, "webhook ") {
			t.Errorf("a second line about a webhook request: %v", rec)
		}
		if rec["path"] != receive.Path {
			continue
		}
		outcomes = append(outcomes, fmt.Sprint(rec["status"], " ", rec["outcome"]))
		if rec["outcome"] == "accepted" && (rec["event_id"] != ev.ID || rec["order_id"] != ev.Data.OrderID) {
			t.Errorf("accepted webhook line without its ids: %v", rec)
		}
	}
	want := []string{"200 accepted", "200 duplicate", "403 forged", "422 invalid", "413 <nil>"}
	if fmt.Sprint(outcomes) != fmt.Sprint(want) {
		t.Errorf("webhook request lines: %q, want %q", outcomes, want)
	}
	if strings.Contains(s.stdout.String(), forgedSig) {
		t.Error("the log shows a webhook-signature value")
	}
	if !strings.Contains(s.stdout.String(), `"smtp_code":451`) {
		t.Error("the refused email's line has no smtp_code")
	}
}

// postForged posts body signed with a secret the notifier does not know,
// expecting 403, and returns the signature it sent.
func postForged(t *testing.T, base string, body []byte) string {
	t.Helper()
	raw, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := webhook.ParseSecrets(raw)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, base+receive.Path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	webhook.SetHeaders(req.Header, secrets, "evt_forged", time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged webhook: %d, want 403", resp.StatusCode)
	}
	return req.Header.Get(webhook.HeaderSignature)
}

// postOversized announces a body over the limit and sends only the head:
// the server must refuse it by its length alone.
func postOversized(t *testing.T, addr string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		receive.Path, addr, receive.MaxBodyBytes+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
