package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/webhook"
)

// Shared test helpers, under the names these tests use.
var (
	eventually = testkit.Eventually
)

type syncBuffer = testkit.SyncBuffer

// required holds the settings without a default that the tests do not
// vary; a test's own vars come first.
var required = map[string]string{
	"ADMIN_TOKEN": "test-admin-token-0123456789abcdef0123", "SECRETS_KEY": "dGVzdCBzZWNyZXRzIGtleSBmb3IgdGVzdHMgb25seSE=",
	"ALLOWED_NETWORKS": "127.0.0.0/8",
}

func envOf(vars map[string]string) func(string) string {
	return func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return required[name]
	}
}

func mustSecret(t *testing.T) string {
	t.Helper()
	s, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// started runs run in the background and returns the HTTP address it
// listens on, taken from its log, and a stop function that cancels it and
// returns run's error.
func started(t *testing.T, vars map[string]string) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"dispatcher"}, envOf(vars), stdout, io.Discard) }()

	eventually(t, 5*time.Second, "the listening log line", func() bool {
		sc := bufio.NewScanner(strings.NewReader(stdout.String()))
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addr = rec.Addr
				return true
			}
		}
		return false
	})
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("run did not return within 10s of the end of its context")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return addr, stop
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestRunRejectsBadSettings(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		vars  map[string]string
		wants []string
	}{
		{
			name:  "retry base not a duration",
			args:  []string{"dispatcher"},
			vars:  map[string]string{"WEBHOOK_SECRET": mustSecret(t), "RETRY_BASE": "banana"},
			wants: []string{`RETRY_BASE="banana"`},
		},
		{
			name:  "secret missing and bad concurrency",
			args:  []string{"dispatcher"},
			vars:  map[string]string{"DISPATCH_CONCURRENCY": "0"},
			wants: []string{"WEBHOOK_SECRET", "DISPATCH_CONCURRENCY"},
		},
		{
			name:  "unexpected arguments",
			args:  []string{"dispatcher", "--port", "80"},
			vars:  map[string]string{"WEBHOOK_SECRET": mustSecret(t)},
			wants: []string{"unexpected arguments"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := run(ctx, tt.args, envOf(tt.vars), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("run succeeded")
			}
			for _, want := range tt.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %s", err, want)
				}
			}
		})
	}
}

func TestRunDeliversAndStops(t *testing.T) {
	srv := natstest.RunServer(t)
	received := make(chan []byte, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		received <- body
	}))
	t.Cleanup(receiver.Close)

	addr, stop := started(t, map[string]string{
		"NATS_URL":                 srv.URL(),
		"DISPATCHER_ADDR":          "127.0.0.1:0",
		"NOTIFICATION_WEBHOOK_URL": receiver.URL + "/webhook/order-paid",
		"WEBHOOK_SECRET":           mustSecret(t),
		"RETRY_BASE":               "50ms",
		"RETRY_MAX":                "200ms",
		"HTTP_TIMEOUT":             "500ms",
	})
	eventually(t, 10*time.Second, "/readyz to answer 200", func() bool {
		return status(t, "http://"+addr+"/readyz") == http.StatusOK
	})
	if got := status(t, "http://"+addr+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d", got)
	}

	_, js := natstest.Connect(t, srv.URL())
	id, err := event.NewID()
	if err != nil {
		t.Fatal(err)
	}
	orderID := uuid.Must(uuid.NewV7()).String()
	body, err := event.OrderPaid{ID: id, Type: event.TypeOrderPaid, Timestamp: time.Now().UTC(), Data: event.OrderData{
		OrderID: orderID, CustomerEmail: "ada@example.com", ProductName: "Book", Quantity: 1, AmountMinor: 2100, Currency: "USD",
	}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, event.Subject(orderID), body, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-received:
		if !bytes.Equal(got, body) {
			t.Errorf("receiver got %s, want %s", got, body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook within 5s")
	}

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("run returned %v, want nil on shutdown", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("HTTP server still accepts connections after run returned")
	}
}

func TestRunNotReadyWithoutNATS(t *testing.T) {
	// Nothing listens on this address: the service must start anyway and
	// report itself not ready.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := ln.Addr().String()
	ln.Close()

	addr, stop := started(t, map[string]string{
		"NATS_URL":        "nats://" + natsAddr,
		"DISPATCHER_ADDR": "127.0.0.1:0",
		"WEBHOOK_SECRET":  mustSecret(t),
	})
	if got := status(t, "http://"+addr+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", got)
	}
	if got := status(t, "http://"+addr+"/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", got)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
}
