package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

// TestClient: the load's hand-written HTTP/1.1 client reads real answers of
// the standard library's server: statuses, bodies it must skip, a server
// that closes the connection, and a chunked answer it must refuse rather
// than misread.
func TestClient(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/created", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Location", "/orders/1")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "later")
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "more")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	c := newClient(addr)
	defer c.close()
	tests := []struct {
		name   string
		path   string
		status int
		err    string
	}{
		{"body echoed and skipped", "/created", 201, ""},
		{"same connection again", "/created", 201, ""},
		{"server closes", "/close", 503, ""},
		{"dials again after the close", "/created", 201, ""},
		{"not found", "/nowhere", 404, ""},
		{"chunked refused", "/chunked", 200, "chunked"},
		{"recovers after the refusal", "/created", 201, ""},
	}
	for _, tt := range tests {
		status, err := c.do(post(nil, addr, tt.path, []byte(`{"a":1}`), "Idempotency-Key", "k"))
		if status != tt.status || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Fatalf("%s: status %d, error %v; want %d and an error containing %q", tt.name, status, err, tt.status, tt.err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := percentiles(d); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Fatalf("percentiles of 1..100 ms = %s, %s; want 50ms, 99ms", p50, p99)
	}
	if p50, p99 := percentiles(nil); p50 != 0 || p99 != 0 {
		t.Fatalf("percentiles of nothing = %s, %s", p50, p99)
	}
}

func TestParseRecipient(t *testing.T) {
	tests := []struct {
		addr string
		tag  string
		n    int
		ok   bool
	}{
		{"e2e-42@" + mailDomain, "e2e", 42, true},
		{"drain-0@" + mailDomain, "drain", 0, true},
		{"e2e-42@example.com", "", 0, false},
		{"e2e@" + mailDomain, "", 0, false},
		{"e2e-x@" + mailDomain, "", 0, false},
	}
	for _, tt := range tests {
		tag, n, ok := parseRecipient(tt.addr)
		if tag != tt.tag || n != tt.n || ok != tt.ok {
			t.Errorf("parseRecipient(%q) = %q, %d, %v; want %q, %d, %v", tt.addr, tag, n, ok, tt.tag, tt.n, tt.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Config{
		Concurrency: 50, Duration: 10 * time.Second, Rate: 1000, RateDuration: 10 * time.Second, OpenConns: 256,
		E2EOrders: 100, Backlog: 100, WaitTimeout: time.Minute, DrainTimeout: time.Minute,
		Env: map[string][]string{"notifier": {"EMAIL_CONCURRENCY=32"}},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	bad := good
	bad.Concurrency = 0
	bad.Phases = []string{"lunch"}
	bad.Env = map[string][]string{"mailer": {"X=1"}, "notifier": {"=1"}}
	err := bad.Validate()
	for _, want := range []string{"concurrency", `"lunch"`, `"mailer"`, `"=1"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want an error naming %s", err, want)
		}
	}
}

func TestRedacted(t *testing.T) {
	got := strings.Join(redacted([]string{"EMAIL_CONCURRENCY=16", "SMTP_PASSWORD=hunter2", "WEBHOOK_SECRET=whsec_x"}), " ")
	if strings.Contains(got, "hunter2") || strings.Contains(got, "whsec_x") || !strings.Contains(got, "EMAIL_CONCURRENCY=16") {
		t.Fatalf("redacted = %q", got)
	}
}

// BenchmarkSign signs an order.paid webhook as the dispatcher does for each
// delivery, with one secret and with two during a rotation. The verifying
// side is BenchmarkVerify in shared/webhook; decoding is BenchmarkDecode in
// shared/event.
func BenchmarkSign(b *testing.B) {
	body, err := sampleEvent("ada@" + mailDomain).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) {
			var secrets []webhook.Secret
			for range n {
				raw, err := webhook.GenerateSecret()
				if err != nil {
					b.Fatal(err)
				}
				s, err := webhook.ParseSecret(raw)
				if err != nil {
					b.Fatal(err)
				}
				secrets = append(secrets, s)
			}
			now := time.Now()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				_ = webhook.Sign(secrets, "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", now, body)
			}
		})
	}
}

// TestLogSink reads the emails of a notifier that logs them, across reads
// that end mid-line.
func TestLogSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notifier.log")
	write := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	s := &logSink{path: path}
	write(`{"time":"2026-12-01T10:00:00.5Z","level":"INFO","msg":"Sending confirmation email to e2e-1@bench.example.com for order x"}` + "\n")
	write(`{"time":"2026-12-01T10:00:01Z","level":"INFO","msg":"email sent"}` + "\n" + `{"time":"2026-12-01T10:00:02Z","msg":"Sending confirmation email to e2e-2@bench`)
	if got := s.read(); len(got) != 1 || got[0].to != "e2e-1@bench.example.com" {
		t.Fatalf("first read: %+v", got)
	}
	write(`.example.com for order y"}` + "\n")
	got := s.read()
	if len(got) != 2 || got[1].to != "e2e-2@bench.example.com" || got[1].at.Second() != 2 {
		t.Fatalf("second read: %+v", got)
	}
}
