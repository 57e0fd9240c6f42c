// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and carries trace context across NATS, so that one
// order is one trace from its POST to the SMTP reply of its email.
//
// Tracing is off unless an OTLP endpoint is set. Then no span is recorded,
// no header is added to any message, and each hook costs one atomic load:
// callers ask Enabled first, and the span helpers return the context's
// own non-recording span without allocating.
package tracing
