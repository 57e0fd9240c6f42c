package service

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/tracing"
)

// untraced are the routes that orchestrators and Prometheus poll every few
// seconds: a span for each would bury the traces that matter.
var untraced = map[string]bool{"/healthz": true, "/readyz": true, metrics.Path: true}

// traceRequests gives every request a server span ("POST /orders"),
// continuing the trace of the caller's traceparent, and hands its context
// to the handler as c.UserContext(). While tracing is off it only calls
// the next handler.
func traceRequests() fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !tracing.Enabled() || untraced[c.Path()] {
			return c.Next()
		}
		ctx := tracing.ExtractText(c.UserContext(), requestHeader{c})
		// Fiber reuses the request's memory once the handler returns, and
		// the span outlives it: every value taken from the request is
		// copied.
		method := strings.Clone(c.Method())
		ctx, span := tracing.Tracer().Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(serverAttrs(c, method)...))
		defer span.End()
		c.SetUserContext(ctx)

		own := c.Route()
		err := c.Next()
		if matched := c.Route(); matched != own {
			span.SetName(method + " " + matched.Path)
			span.SetAttributes(semconv.HTTPRoute(matched.Path))
		}
		status := c.Response().StatusCode()
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		// A 4xx is the client's mistake, not the server's failure.
		if status >= 500 {
			span.SetStatus(codes.Error, "")
			span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		}
		return err
	}
}

// serverAttrs are the conventions' attributes of an HTTP server span that
// the request tells.
func serverAttrs(c *fiber.Ctx, method string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLPath(strings.Clone(c.Path())),
		semconv.URLScheme(strings.Clone(c.Protocol())),
		semconv.NetworkProtocolVersion(strings.TrimPrefix(string(c.Request().Header.Protocol()), "HTTP/")),
	}
	host, port, err := net.SplitHostPort(c.Hostname())
	if err != nil {
		host = c.Hostname()
	}
	if host != "" {
		attrs = append(attrs, semconv.ServerAddress(strings.Clone(host)))
	}
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	if ip := c.Context().RemoteIP(); ip != nil {
		attrs = append(attrs, semconv.ClientAddress(ip.String()))
	}
	if ua := c.Get(fiber.HeaderUserAgent); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(strings.Clone(ua)))
	}
	return attrs
}

// requestHeader reads a request's headers for the propagator. Values are
// copied: a tracestate is kept in the span context, past the request.
type requestHeader struct{ c *fiber.Ctx }

func (r requestHeader) Get(key string) string { return strings.Clone(r.c.Get(key)) }
func (r requestHeader) Set(string, string)    {}
func (r requestHeader) Keys() []string {
	keys := make([]string, 0, 16)
	for k := range r.c.GetReqHeaders() {
		keys = append(keys, k)
	}
	return keys
}

// flushTraces exports the spans still waiting, within ctx, while the NATS
// connection drains beside it; done is closed when it is over.
func flushTraces(ctx context.Context, logger *slog.Logger) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		if err := tracing.Shutdown(ctx); err != nil {
			logger.Warn("trace flush", "error", err.Error())
		}
	}()
	return done
}
