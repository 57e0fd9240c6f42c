package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/jethook/jethook/shared/config"
)

// scope names the instrumentation in every span: jethook's own hooks.
const scope = "github.com/jethook/jethook"

// installed is the tracer of the process, nil while tracing is off.
var installed atomic.Pointer[provider]

type provider struct {
	sdk    *sdktrace.TracerProvider
	tracer trace.Tracer
}

// propagator carries the W3C traceparent and tracestate. Baggage is left
// out on purpose: what a client puts there would travel on to every
// webhook receiver.
var propagator = propagation.TraceContext{}

// noopTracer is what Tracer returns while tracing is off.
var noopTracer = noop.NewTracerProvider().Tracer(scope)

// Enabled reports whether spans are being recorded. Hooks ask it first,
// so that tracing off costs them nothing more.
func Enabled() bool { return installed.Load() != nil }

// Tracer returns the process's tracer, a no-op one while tracing is off.
func Tracer() trace.Tracer {
	if p := installed.Load(); p != nil {
		return p.tracer
	}
	return noopTracer
}

// Setup reads the OTEL_* variables through getenv (see Load) and, when an
// OTLP endpoint is set, installs a tracer provider that exports to it in
// batches. Shutdown flushes it. service is the service's short name.
func Setup(ctx context.Context, getenv func(string) string, service string, logger *slog.Logger) error {
	cfg, err := Load(getenv, service)
	if err != nil {
		return err
	}
	if !cfg.On() {
		return nil
	}
	tp, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	// Export failures (a collector away) are the SDK's to report; they
	// go to the service's log rather than to the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("trace export", "error", err.Error())
	}))
	Install(tp)
	logger.Info("tracing", "otlp_endpoint", config.RedactURL(cfg.Endpoint), "otlp_protocol", cfg.Protocol,
		"sampler", cfg.SamplerName, "service_name", serviceName(cfg))
	return nil
}

// New returns a tracer provider for cfg that exports in batches to its
// endpoint.
func New(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	var exp sdktrace.SpanExporter
	var err error
	switch cfg.Protocol {
	case ProtocolGRPC:
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
	default:
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.Endpoint))
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// The resource is built from cfg alone: resource.Default would read
	// the environment again, past getenv.
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(cfg.Resource...))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	var batch []sdktrace.BatchSpanProcessorOption
	if cfg.ScheduleDelay > 0 {
		batch = append(batch, sdktrace.WithBatchTimeout(cfg.ScheduleDelay))
	}
	if cfg.ExportTimeout > 0 {
		batch = append(batch, sdktrace.WithExportTimeout(cfg.ExportTimeout))
	}
	if cfg.MaxQueueSize > 0 {
		batch = append(batch, sdktrace.WithMaxQueueSize(cfg.MaxQueueSize))
	}
	if cfg.MaxExportBatchSize > 0 {
		batch = append(batch, sdktrace.WithMaxExportBatchSize(cfg.MaxExportBatchSize))
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, batch...),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(cfg.Sampler),
	), nil
}

// Install makes tp the process's tracer provider, as Setup does; tests
// install one that records in memory. It returns a function that puts
// back what was installed before, without shutting tp down.
func Install(tp *sdktrace.TracerProvider) (restore func()) {
	old := installed.Swap(&provider{sdk: tp, tracer: tp.Tracer(scope)})
	return func() { installed.Store(old) }
}

// Shutdown exports the spans still waiting and stops tracing, within ctx;
// without a tracer provider it does nothing.
func Shutdown(ctx context.Context) error {
	p := installed.Swap(nil)
	if p == nil {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

func serviceName(cfg Config) string {
	for _, a := range cfg.Resource {
		if a.Key == serviceNameKey {
			return a.Value.AsString()
		}
	}
	return ""
}
