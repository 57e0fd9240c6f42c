package consume

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/tracing"
)

// startSpan starts the consumer span of one delivery of m ("process
// ORDERS"), continuing the trace its headers carry, so that each delivery
// of a message, retries included, is a child of the span that published it.
func (r *Runner) startSpan(ctx context.Context, m *Msg) (context.Context, trace.Span) {
	return tracing.StartProcess(ctx, r.cfg.Stream, r.cfg.Name, m.Msg, m.Attempt())
}

// endSpan records what became of the message, with the ids of its log
// line, and ends the span. A retry or a dead letter is a failed attempt,
// and so is a failure to settle.
func endSpan(span trace.Span, d Decision, verdict Verdict, settleErr error) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(tracing.IDs(d.text("event_id"), d.text("order_id"))...)
	span.SetAttributes(tracing.OutcomeKey.String(d.Outcome))
	if verdict != VerdictAck {
		err := d.Err
		if err == nil {
			err = errors.New(verdict.String() + ": " + d.Outcome)
		}
		tracing.Fail(span, err)
	}
	tracing.Fail(span, settleErr)
	span.End()
}

// text returns the log attribute key as text, "" when the decision has
// none.
func (d Decision) text(key string) string {
	if v, ok := d.Attr(key); ok {
		return v.String()
	}
	return ""
}
