package tracing

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Header carries trace context in the headers of a NATS message, as
// traceparent and tracestate: the context travels with the message into
// the stream, and every delivery of it, retries and dead-letter copies
// included, continues from there.
type Header nats.Header

var _ propagation.TextMapCarrier = Header(nil)

// Get returns the value of key, or "".
func (h Header) Get(key string) string { return nats.Header(h).Get(key) }

// Set sets key to value.
func (h Header) Set(key, value string) { nats.Header(h).Set(key, value) }

// Keys lists the header's keys.
func (h Header) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into h, when tracing is on and
// ctx has a span; h must not be nil.
func Inject(ctx context.Context, h nats.Header) {
	if Enabled() {
		propagator.Inject(ctx, Header(h))
	}
}

// Extract returns ctx with the remote span context that h carries, or ctx
// itself when it carries none or tracing is off.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if !Enabled() || h == nil {
		return ctx
	}
	return propagator.Extract(ctx, Header(h))
}

// Context headers: the W3C names the propagator reads and writes.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// CopyContext copies the trace context src carries, if any, into dst: a
// message made from another, such as a replay of a dead letter, continues
// the original's trace whether or not this process traces.
func CopyContext(dst, src nats.Header) {
	for _, k := range [...]string{HeaderTraceparent, HeaderTracestate} {
		if v := src.Get(k); v != "" {
			dst.Set(k, v)
		}
	}
}

// InjectHTTP writes the trace context of ctx into the headers of an
// outgoing HTTP request, when tracing is on.
func InjectHTTP(ctx context.Context, h http.Header) {
	if Enabled() {
		propagator.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// ExtractText returns ctx with the remote span context that c carries:
// the headers of an incoming request, say.
func ExtractText(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	if !Enabled() {
		return ctx
	}
	return propagator.Extract(ctx, c)
}
