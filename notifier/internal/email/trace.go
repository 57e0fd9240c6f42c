package email

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/tracing"
)

// Attributes of a send's span: the relay's reply, and where a failed
// conversation stopped. The conventions have none for SMTP.
const (
	smtpCodeKey  = attribute.Key("jethook.smtp.code")
	smtpReplyKey = attribute.Key("jethook.smtp.reply")
	smtpStageKey = attribute.Key("jethook.smtp.stage")
)

// codeAccepted is the reply to the final "." of a message the relay took.
const codeAccepted = 250

// tracedSender gives each send a client span, "send email", under the
// email worker's consumer span.
type tracedSender struct {
	next  Sender
	attrs []attribute.KeyValue
}

// Traced wraps s so that each send is a span with the relay's address
// (host:port, empty for a sender without a relay) and its reply.
func Traced(s Sender, relay string) Sender {
	t := tracedSender{next: s}
	if host, port, err := net.SplitHostPort(relay); err == nil {
		p, _ := strconv.Atoi(port)
		t.attrs = []attribute.KeyValue{semconv.ServerAddress(host), semconv.ServerPort(p)}
	}
	return t
}

// Send sends m under its span. A failure names its stage, and the relay's
// code and reply when it gave one.
func (t tracedSender) Send(ctx context.Context, m Message, commit Commit) error {
	ctx, span := tracing.Tracer().Start(ctx, "send email", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(t.attrs...), trace.WithAttributes(tracing.IDs(m.EventID, m.OrderID)...))
	defer span.End()
	err := t.next.Send(ctx, m, commit)
	var se *SendError
	if errors.As(err, &se) {
		span.SetAttributes(smtpStageKey.String(se.Stage))
		errorType := se.Stage
		if se.Code != 0 {
			span.SetAttributes(smtpCodeKey.Int(se.Code), smtpReplyKey.String(se.Reply))
			errorType = strconv.Itoa(se.Code)
		}
		tracing.FailAs(span, err, errorType)
	} else {
		tracing.Fail(span, err)
	}
	return err
}

// noteAccepted puts the relay's acceptance of a message on the send's span.
func noteAccepted(ctx context.Context, resp *smtp.DataResponse) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() || resp == nil {
		return
	}
	span.SetAttributes(smtpCodeKey.Int(codeAccepted), smtpReplyKey.String(resp.StatusText))
}
