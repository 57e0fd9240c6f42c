package tracing_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

func TestHeaderCarrier(t *testing.T) {
	tracingtest.Record(t)
	ctx, span := tracing.Tracer().Start(context.Background(), "parent")
	defer span.End()
	h := nats.Header{"Jethook-Order-Created-At": {"2026-11-28T10:00:00Z"}}
	tracing.Inject(ctx, h)
	sc := span.SpanContext()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got := h.Get("traceparent"); got != want {
		t.Fatalf("traceparent = %q, want %q", got, want)
	}
	keys := tracing.Header(h).Keys()
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"Jethook-Order-Created-At", "traceparent"}) {
		t.Fatalf("Keys() = %v", keys)
	}
	got := trace.SpanContextFromContext(tracing.Extract(context.Background(), h))
	if !got.IsRemote() || got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsSampled() {
		t.Fatalf("extracted %+v, want the parent's context", got)
	}
	if got := trace.SpanContextFromContext(tracing.Extract(context.Background(), nats.Header{})); got.IsValid() {
		t.Fatalf("a message without traceparent gave %+v", got)
	}
}

// TestContextCrossesJetStream: a message published under StartPublish and
// consumed twice (a retry) gives two process spans, each a child of the
// publish span in the same trace, as the headers stored in the stream say.
func TestContextCrossesJetStream(t *testing.T) {
	rec := tracingtest.Record(t)
	ns := natstest.RunServer(t)
	_, js := natstest.Connect(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}

	reqCtx, request := tracing.Tracer().Start(ctx, "POST /orders")
	msg := &nats.Msg{Subject: "orders.paid.o1", Data: []byte(`{"id":"evt_1"}`)}
	pubCtx, pub := tracing.StartPublish(reqCtx, "ORDERS", msg, "evt_1", "evt_1", "o1")
	_, err := js.PublishMsg(pubCtx, msg)
	tracing.End(pub, err)
	request.End()
	if err != nil {
		t.Fatal(err)
	}

	cons, err := js.CreateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for delivery := uint64(1); delivery <= 2; delivery++ {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		_, span := tracing.StartProcess(context.Background(), "ORDERS", "c", m, delivery)
		if delivery == 1 {
			_ = m.Nak()
		} else {
			_ = m.Ack()
		}
		span.End()
	}

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	send, process := byName["send ORDERS"], byName["process ORDERS"]
	if len(send) != 1 || len(process) != 2 {
		t.Fatalf("spans: %d send, %d process", len(send), len(process))
	}
	if send[0].Parent().SpanID() != request.SpanContext().SpanID() || send[0].SpanKind() != trace.SpanKindProducer {
		t.Errorf("send ORDERS: parent %s kind %s", send[0].Parent().SpanID(), send[0].SpanKind())
	}
	for i, p := range process {
		if p.SpanContext().TraceID() != request.SpanContext().TraceID() || p.Parent().SpanID() != send[0].SpanContext().SpanID() ||
			!p.Parent().IsRemote() || p.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("delivery %d: trace %s parent %s kind %s, want trace %s parent %s (remote), consumer", i+1,
				p.SpanContext().TraceID(), p.Parent().SpanID(), p.SpanKind(), request.SpanContext().TraceID(), send[0].SpanContext().SpanID())
		}
	}
	want := map[string]string{
		"messaging.system": "nats", "messaging.destination.name": "orders.paid.o1", "messaging.operation.type": "send",
		"messaging.message.id": "evt_1", "jethook.event_id": "evt_1", "jethook.order_id": "o1",
	}
	tracingtest.Expect(t, send[0], want)
	tracingtest.Expect(t, process[1], map[string]string{
		"messaging.system": "nats", "messaging.destination.name": "orders.paid.o1", "messaging.operation.type": "process",
		"messaging.consumer.group.name": "c", "jethook.attempt": "2",
	})
	// The request's span carries the ids too, so that a search finds the
	// trace by its root.
	for _, s := range spans {
		if s.Name() == "POST /orders" {
			tracingtest.Expect(t, s, map[string]string{"jethook.event_id": "evt_1", "jethook.order_id": "o1"})
		}
	}
}

// TestOffCostsNothing: with tracing off, the hooks write no header and
// allocate nothing.
func TestOffCostsNothing(t *testing.T) {
	if tracing.Enabled() {
		t.Fatal("tracing is on at the start of the test")
	}
	ctx := context.Background()
	msg := &nats.Msg{Subject: "orders.paid.o1", Header: nats.Header{}}
	eventID, orderID := "evt_1", "o1"
	allocs := testing.AllocsPerRun(100, func() {
		c, span := tracing.StartPublish(ctx, "ORDERS", msg, eventID, eventID, orderID)
		tracing.Inject(c, msg.Header)
		_ = tracing.Extract(c, msg.Header)
		tracing.End(span, nil)
	})
	if allocs != 0 || len(msg.Header) != 0 {
		t.Fatalf("tracing off: %.0f allocations, headers %v", allocs, msg.Header)
	}
}
