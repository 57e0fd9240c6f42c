package tracing

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Attributes of jethook's own, beside the semantic conventions' ones. The
// ids are the ones of the logs, so that a trace viewer finds an order's
// trace by its event_id or order_id.
const (
	EventIDKey = attribute.Key("jethook.event_id")
	OrderIDKey = attribute.Key("jethook.order_id")
	// AttemptKey is the delivery count of a consumed message, 1 for its
	// first delivery.
	AttemptKey = attribute.Key("jethook.attempt")
	// OutcomeKey is what the handler made of a message ("delivered",
	// "sent", "duplicate", ...), as its log line says.
	OutcomeKey = attribute.Key("jethook.outcome")
)

// NonRecording is the span the helpers return while tracing is off: every
// method does nothing, and it costs no allocation.
var NonRecording = trace.SpanFromContext(context.Background())

// messagingNATS is messaging.system=nats, which the conventions do not
// list among their well-known systems.
var messagingNATS = semconv.MessagingSystemKey.String("nats")

// StartPublish starts the producer span of a publish of msg to stream
// ("send ORDERS") and writes its context into msg's headers, so that
// whoever consumes the message continues the trace. msgID is the message's
// Nats-Msg-Id; eventID and orderID, when not empty, go on the span and on
// its parent, the request that publishes, for a search by either. While
// tracing is off it returns ctx and NonRecording, and touches nothing.
func StartPublish(ctx context.Context, stream string, msg *nats.Msg, msgID, eventID, orderID string) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, NonRecording
	}
	ids := IDs(eventID, orderID)
	trace.SpanFromContext(ctx).SetAttributes(ids...)
	attrs := append([]attribute.KeyValue{
		messagingNATS,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(msg.Subject),
		semconv.MessagingMessageID(msgID),
		semconv.MessagingMessageBodySize(len(msg.Data)),
	}, ids...)
	ctx, span := Tracer().Start(ctx, "send "+stream, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	Inject(ctx, msg.Header)
	return ctx, span
}

// IDs returns the attributes of an event id and an order id, leaving out
// either when it is empty.
func IDs(eventID, orderID string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 2)
	if eventID != "" {
		attrs = append(attrs, EventIDKey.String(eventID))
	}
	if orderID != "" {
		attrs = append(attrs, OrderIDKey.String(orderID))
	}
	return attrs
}

// StartProcess starts the consumer span of the handling of one delivery of
// msg by consumer on stream ("process ORDERS"), continuing the trace that
// the message's headers carry: every delivery of a message, the first and
// each retry, is a child of the span that published it.
func StartProcess(ctx context.Context, stream, consumer string, msg jetstream.Msg, delivery uint64) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, NonRecording
	}
	h := msg.Headers()
	ctx = Extract(ctx, h)
	attrs := []attribute.KeyValue{
		messagingNATS,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(msg.Subject()),
		semconv.MessagingConsumerGroupName(consumer),
		semconv.MessagingMessageBodySize(len(msg.Data())),
		AttemptKey.Int64(int64(delivery)),
	}
	if id := h.Get(jetstream.MsgIDHeader); id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	return Tracer().Start(ctx, "process "+stream, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// Fail marks span as failed by err: its status, the recorded error and
// error.type, the error's Go type. A nil err leaves the span as it is.
func Fail(span trace.Span, err error) { FailAs(span, err, "") }

// FailAs is Fail with errorType as error.type, such as an HTTP status
// code, when it is not empty.
func FailAs(span trace.Span, err error, errorType string) {
	if err == nil || !span.IsRecording() {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	if errorType != "" {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType))
	} else {
		span.SetAttributes(semconv.ErrorType(err))
	}
}

// End marks span failed by err, when err is not nil, and ends it.
func End(span trace.Span, err error) {
	Fail(span, err)
	span.End()
}
