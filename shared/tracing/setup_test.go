package tracing_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func getenv(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// TestSetupExports: with an OTLP endpoint, over either protocol, spans
// reach the collector with the service's name, and Shutdown sends those
// still waiting.
func TestSetupExports(t *testing.T) {
	col := tracingtest.StartCollector(t)
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"OTLP/HTTP by default", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL}},
		{"OTLP/gRPC", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + col.GRPCAddr, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_SERVICE_NAME": "grpc-orders"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A schedule far longer than the test: only Shutdown sends.
			tt.env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"
			if err := tracing.Setup(context.Background(), getenv(tt.env), "orders", discard); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
			if !tracing.Enabled() {
				t.Fatal("tracing is off with an endpoint set")
			}
			_, span := tracing.Tracer().Start(context.Background(), "setup test")
			traceID := span.SpanContext().TraceID().String()
			span.End()
			if err := tracing.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tracing.Enabled() {
				t.Fatal("tracing is still on after Shutdown")
			}
			got := col.Trace(traceID)
			want := "jethook-orders"
			if tt.env["OTEL_SERVICE_NAME"] != "" {
				want = tt.env["OTEL_SERVICE_NAME"]
			}
			if len(got) != 1 || got[0].Name != "setup test" || got[0].Service != want {
				t.Fatalf("the collector has, for the trace:\n%s", tracingtest.Dump(got))
			}
		})
	}
}

// TestSetupBatches: spans go out by themselves after the schedule delay,
// without a Shutdown.
func TestSetupBatches(t *testing.T) {
	col := tracingtest.StartCollector(t)
	err := tracing.Setup(context.Background(), getenv(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL, "OTEL_BSP_SCHEDULE_DELAY": "50",
	}), "dispatcher", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
	_, span := tracing.Tracer().Start(context.Background(), "batched")
	span.End()
	testkit.Eventually(t, 10*time.Second, "the span exported", func() bool {
		return len(col.Trace(span.SpanContext().TraceID().String())) == 1
	})
}

// TestSetupOff: without an endpoint, or with tracing disabled, nothing is
// installed: the tracer records nothing and no header is written.
func TestSetupOff(t *testing.T) {
	col := tracingtest.StartCollector(t)
	for name, env := range map[string]map[string]string{
		"no endpoint":  {"OTEL_SERVICE_NAME": "x"},
		"disabled":     {"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL, "OTEL_SDK_DISABLED": "true"},
		"exporter off": {"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL, "OTEL_TRACES_EXPORTER": "none"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := tracing.Setup(context.Background(), getenv(env), "orders", discard); err != nil {
				t.Fatal(err)
			}
			if tracing.Enabled() {
				t.Fatal("tracing is on")
			}
			ctx, span := tracing.Tracer().Start(context.Background(), "nothing")
			span.End()
			if span.IsRecording() || trace.SpanContextFromContext(ctx).IsValid() {
				t.Fatal("the tracer records while tracing is off")
			}
			if err := tracing.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n := col.Requests(); n != 0 {
		t.Fatalf("the collector received %d exports while tracing was off", n)
	}
}

// TestSetupRefusesBadSettings: a bad variable stops the start.
func TestSetupRefusesBadSettings(t *testing.T) {
	err := tracing.Setup(context.Background(), getenv(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}), "orders", discard)
	if err == nil || tracing.Enabled() {
		t.Fatalf("Setup = %v with an endpoint without a scheme", err)
	}
}
