package consume_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

// TestEveryDeliveryContinuesThePublishersTrace: a message retried, then
// dead-lettered, is handled three times, each under a process span that is
// a child of the span that published it; the failed ones are marked, the
// handler sees its span, and the dead-letter copy carries the same trace
// context.
func TestEveryDeliveryContinuesThePublishersTrace(t *testing.T) {
	rec := tracingtest.Record(t)
	handlerSpans := make(chan trace.SpanContext, 3)
	f := newFixture(t, 1, func(ctx context.Context, m *consume.Msg) consume.Decision {
		handlerSpans <- trace.SpanContextFromContext(ctx)
		ids := []slog.Attr{slog.String("event_id", "evt_1"), slog.String("order_id", "o1")}
		if m.Attempt() < 3 {
			return consume.Retry("failed", 10*time.Millisecond, errors.New("receiver answered 503"), ids...)
		}
		return consume.DeadLetter("refused", "gave up", errors.New("receiver answered 410"), ids...)
	})
	ctx, pub := tracing.Tracer().Start(context.Background(), "publisher")
	msg := &nats.Msg{Subject: "work.job", Data: []byte("x"), Header: nats.Header{}}
	tracing.Inject(ctx, msg.Header)
	pub.End()
	if _, err := f.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	f.start()
	testkit.Eventually(t, 15*time.Second, "the dead letter", func() bool { return len(f.deadLetters()) == 1 })
	f.stop()

	var process []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "process WORK" {
			process = append(process, s)
		}
	}
	if len(process) != 3 {
		t.Fatalf("%d process spans, want 3", len(process))
	}
	for i, s := range process {
		if s.SpanContext().TraceID() != pub.SpanContext().TraceID() || s.Parent().SpanID() != pub.SpanContext().SpanID() {
			t.Errorf("delivery %d: trace %s parent %s, want %s %s", i+1, s.SpanContext().TraceID(), s.Parent().SpanID(),
				pub.SpanContext().TraceID(), pub.SpanContext().SpanID())
		}
		if s.Status().Code.String() != "Error" || len(s.Events()) == 0 || s.Events()[0].Name != "exception" {
			t.Errorf("delivery %d: status %s, events %v: the failure is not recorded", i+1, s.Status(), s.Events())
		}
		if got := <-handlerSpans; got.SpanID() != s.SpanContext().SpanID() {
			t.Errorf("delivery %d: the handler ran under %s", i+1, got.SpanID())
		}
		tracingtest.Expect(t, s, map[string]string{
			"messaging.system": "nats", "messaging.operation.type": "process", "messaging.destination.name": "work.job",
			"messaging.consumer.group.name": testConsumer, "jethook.event_id": "evt_1", "jethook.order_id": "o1",
		})
	}
	if got := f.deadLetters()[0].Header.Get("traceparent"); got != msg.Header.Get("traceparent") {
		t.Errorf("the dead letter's traceparent = %q, want the original's %q", got, msg.Header.Get("traceparent"))
	}
}
