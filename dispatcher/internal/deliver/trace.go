package deliver

import (
	"context"
	"errors"
	"net/url"
	"strconv"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/tracing"
)

// startAttempt starts the client span of one webhook attempt ("POST"),
// under the delivery's consumer span, with the conventions' HTTP client
// attributes. The URL's query is left out: receivers put tokens there.
func startAttempt(ctx context.Context, target, eventID string) (context.Context, trace.Span) {
	if !tracing.Enabled() {
		return ctx, tracing.NonRecording
	}
	ctx, span := tracing.Tracer().Start(ctx, "POST", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.HTTPRequestMethodPost, tracing.EventIDKey.String(eventID)))
	if u, err := url.Parse(target); err == nil {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		p, _ := strconv.Atoi(port)
		span.SetAttributes(
			semconv.URLFull((&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()),
			semconv.ServerAddress(u.Hostname()), semconv.ServerPort(p))
	}
	return ctx, span
}

// endAttempt records the receiver's answer, or the failure to get one,
// and ends the span. Any answer outside 2xx is a failed attempt.
func endAttempt(span trace.Span, a answer, err error) {
	if !span.IsRecording() {
		return
	}
	if a.status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(a.status))
	}
	var errorType string
	var se *StatusError
	if errors.As(err, &se) {
		errorType = strconv.Itoa(se.Status)
	}
	tracing.FailAs(span, err, errorType)
	span.End()
}
