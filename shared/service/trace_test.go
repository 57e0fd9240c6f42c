package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

// TestServerSpans: every request but the polled ones is a server span
// named by its route, continuing the client's traceparent, with its status,
// and the handler runs under it.
func TestServerSpans(t *testing.T) {
	rec := tracingtest.Record(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	app := NewApp(AppConfig{Name: "test", Logger: logger, Registry: metrics.NewRegistry()})
	var handlerSpan trace.SpanContext
	app.Post("/things/:id", func(c *fiber.Ctx) error {
		handlerSpan = trace.SpanContextFromContext(c.UserContext())
		return c.SendStatus(201)
	})
	app.Get("/broken", func(*fiber.Ctx) error { return errors.New("a bug") })

	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := httptest.NewRequest("POST", "http://orders.test:8080/things/42", nil)
	req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	req.Header.Set("User-Agent", "shop/1.0")
	if _, err := app.Test(req); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/broken", "/healthz", "/nowhere"} {
		if _, err := app.Test(httptest.NewRequest("GET", path, nil)); err != nil {
			t.Fatal(err)
		}
	}

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	if len(spans) != 3 {
		t.Fatalf("%d spans, want POST /things/:id, GET /broken and GET (no route): %v", len(spans), spans)
	}
	post := spans["POST /things/:id"]
	if post == nil {
		t.Fatalf("no span named by the route: %v", spans)
	}
	if post.SpanKind() != trace.SpanKindServer || post.SpanContext().TraceID().String() != clientTrace ||
		post.Parent().SpanID().String() != clientSpan || !post.Parent().IsRemote() {
		t.Fatalf("POST span: kind %s trace %s parent %s", post.SpanKind(), post.SpanContext().TraceID(), post.Parent().SpanID())
	}
	if handlerSpan.SpanID() != post.SpanContext().SpanID() {
		t.Errorf("the handler ran under span %s, not the request's %s", handlerSpan.SpanID(), post.SpanContext().SpanID())
	}
	tracingtest.Expect(t, post, map[string]string{
		"http.request.method": "POST", "http.route": "/things/:id", "url.path": "/things/42", "url.scheme": "http",
		"http.response.status_code": "201", "server.address": "orders.test", "server.port": "8080", "user_agent.original": "shop/1.0",
	})
	if post.Status().Code.String() != "Unset" {
		t.Errorf("a 201 has status %s", post.Status().Code)
	}
	if s := spans["GET /broken"]; s == nil || s.Status().Code.String() != "Error" {
		t.Errorf("a 500 is not marked as an error: %v", s)
	}
	if s := spans["GET"]; s == nil || s.Status().Code.String() != "Unset" {
		t.Errorf("an unmatched path: %v", s)
	}
}

// TestRunFlushesTraces: the spans of a service's last work reach the
// collector when it stops, although the batch's schedule is far off.
func TestRunFlushesTraces(t *testing.T) {
	col := tracingtest.StartCollector(t)
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := tracing.Setup(context.Background(), func(k string) string { return env[k] }, "test", logger); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
	ns := natstest.RunServer(t)
	conn, err := Open("test", "TEST_ADDR", "127.0.0.1:0", config.NATS{NATSURL: ns.URL()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(AppConfig{Name: "test", Logger: logger, Registry: metrics.NewRegistry()})
	var traceID string
	worker := func(ctx context.Context) error {
		_, span := tracing.Tracer().Start(ctx, "last work")
		traceID = span.SpanContext().TraceID().String()
		<-ctx.Done()
		span.End()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, logger, conn, app, worker) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := col.Trace(traceID); len(got) != 1 || got[0].Name != "last work" || got[0].Service != "jethook-test" {
		t.Fatalf("the collector has %v", got)
	}
}
