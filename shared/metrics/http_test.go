package metrics_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/shared/health"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/metrics/metricstest"
	"github.com/jethook/jethook/shared/problem"
)

type syncBuffer = testkit.SyncBuffer

// logLines returns the JSON log records written to b so far.
func logLines(t *testing.T, b *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

// observation is one call of HTTPConfig.Observe.
type observation struct {
	route  string
	status int
}

type fixture struct {
	base string
	addr string
	logs *syncBuffer

	mu       sync.Mutex
	observed []observation
}

const uploadLimit = 1 << 10

// newFixture serves a small app instrumented as the services are: the
// middleware first, the wrapped problem ErrorHandler, /metrics and health.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := metrics.NewRegistry()
	m := metrics.NewHTTP(reg, metrics.HTTPConfig{
		Service: "test",
		Logger:  logger,
		Observe: func(_ *fiber.Ctx, route string, status int) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.observed = append(f.observed, observation{route, status})
		},
	})
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ErrorHandler:          m.ErrorHandler(problem.ErrorHandler(logger)),
		BodyLimit:             uploadLimit,
	})
	app.Use(m.Middleware())
	health.Register(app, func(context.Context) error { return nil })
	metrics.Register(app, reg)
	app.Get("/things/:id", func(c *fiber.Ctx) error {
		metrics.Annotate(c, "event_id", "evt_"+c.Params("id"))
		return c.JSON(fiber.Map{"id": c.Params("id")})
	})
	app.Post("/upload", func(c *fiber.Ctx) error {
		return problem.Invalid(map[string]string{"name": "is required"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	f.addr = ln.Addr().String()
	f.base = "http://" + f.addr
	return f
}

func (f *fixture) do(t *testing.T, method, path string) int {
	t.Helper()
	req, err := http.NewRequest(method, f.base+path, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// oversized announces a body over the limit and sends only the head: the
// server refuses it by its length, before any route runs.
func (f *fixture) oversized(t *testing.T, path string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, uploadLimit+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

func TestRequestsAreCountedAndLogged(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		send       func(t *testing.T) int
		wantStatus int
		wantRoute  string
		wantLevel  string
		wantAttrs  map[string]any
	}{
		{"matched route with an annotation", func(t *testing.T) int { return f.do(t, http.MethodGet, "/things/42") },
			200, "/things/:id", "INFO", map[string]any{"event_id": "evt_42", "path": "/things/42"}},
		{"handler error through the ErrorHandler", func(t *testing.T) int { return f.do(t, http.MethodPost, "/upload") },
			422, "/upload", "WARN", map[string]any{"errors": map[string]any{"name": "is required"}}},
		{"body over the limit, refused before routing", func(t *testing.T) int { return f.oversized(t, "/upload") },
			413, "/upload", "WARN", map[string]any{"reason": "Request Entity Too Large"}},
		{"body over the limit on an unknown path", func(t *testing.T) int { return f.oversized(t, "/elsewhere") },
			413, metrics.Unmatched, "WARN", nil},
		{"unknown path", func(t *testing.T) int { return f.do(t, http.MethodGet, "/nope/123") },
			404, metrics.Unmatched, "WARN", map[string]any{"path": "/nope/123"}},
		{"method not allowed", func(t *testing.T) int { return f.do(t, http.MethodDelete, "/upload") },
			405, metrics.Unmatched, "WARN", nil},
		{"probe", func(t *testing.T) int { return f.do(t, http.MethodGet, "/healthz") },
			200, "/healthz", "DEBUG", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(logLines(t, f.logs))
			if got := tt.send(t); got != tt.wantStatus {
				t.Fatalf("status %d, want %d", got, tt.wantStatus)
			}
			// The line is written after the answer; wait for it.
			var lines []map[string]any
			deadline := time.Now().Add(5 * time.Second)
			for {
				lines = logLines(t, f.logs)[before:]
				if len(lines) > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
			}
			rec := lines[0]
			want := map[string]any{"msg": "http request", "level": tt.wantLevel, "route": tt.wantRoute,
				"status": float64(tt.wantStatus)}
			for k, v := range tt.wantAttrs {
				want[k] = v
			}
			for k, v := range want {
				if fmt.Sprint(rec[k]) != fmt.Sprint(v) {
					t.Errorf("log %s = %v, want %v (line %v)", k, rec[k], v, rec)
				}
			}
			for _, k := range []string{"method", "path", "duration_ms"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("log line has no %s: %v", k, rec)
				}
			}

			fams := metricstest.Scrape(t, f.base+metrics.Path)
			status := fmt.Sprint(tt.wantStatus)
			if got, _ := fams.Value("jethook_http_requests_total", "service", "test", "route", tt.wantRoute, "status", status); got < 1 {
				t.Errorf("jethook_http_requests_total{route=%q,status=%q} = %v, want >= 1", tt.wantRoute, status, got)
			}
			if got, _ := fams.Value("jethook_http_request_duration_seconds", "service", "test", "route", tt.wantRoute); got < 1 {
				t.Errorf("jethook_http_request_duration_seconds{route=%q} count = %v, want >= 1", tt.wantRoute, got)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if !containsObservation(f.observed, observation{tt.wantRoute, tt.wantStatus}) {
				t.Errorf("Observe never saw %s %d: %v", tt.wantRoute, tt.wantStatus, f.observed)
			}
		})
	}
}

func containsObservation(obs []observation, want observation) bool {
	for _, o := range obs {
		if o == want {
			return true
		}
	}
	return false
}

func TestRegistryHasRuntimeCollectors(t *testing.T) {
	f := newFixture(t)
	fams := metricstest.Scrape(t, f.base+metrics.Path)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s in the scrape", name)
		}
	}
}
