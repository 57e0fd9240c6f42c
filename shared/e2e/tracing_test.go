package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

// TestOneTracePerOrder: the three services export to an OTLP collector on
// 127.0.0.1 (the binaries are separate processes, so the SDK's in-memory
// exporter cannot see them). One order sent with a client's traceparent,
// whose first webhook attempt fails, is one trace in that client's trace:
// the POST, the publish to ORDERS, both deliveries and their attempts,
// the notifier's receive, the hand-off through NOTIFICATIONS and the email
// with its SMTP reply, each span the child of the one before it across
// NATS and HTTP.
func TestOneTracePerOrder(t *testing.T) {
	col := tracingtest.StartCollector(t)
	s := startSystem(t, options{env: map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL,
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
	}})
	s.proxy.mode.Store(mode503)

	traceID, clientSpan := randomHex(t, 16), randomHex(t, 8)
	o := s.createTracedOrder("00-" + traceID + "-" + clientSpan + "-01")
	eventually(t, 15*time.Second, "a refused first attempt", func() bool { return len(s.proxy.attemptsFor(o.EventID)) >= 1 })
	s.proxy.mode.Store(modePass)
	s.waitEmail(o.OrderID, 20*time.Second)

	// Every span of the order, as the services send them in batches.
	want := map[string]int{
		"orders/POST /orders": 1, "orders/send ORDERS": 1,
		"dispatcher/process ORDERS": 2, "dispatcher/POST": 2,
		"notifier/POST /webhook/order-paid": 1, "notifier/send NOTIFICATIONS": 1,
		"notifier/process NOTIFICATIONS": 1, "notifier/send email": 1,
	}
	var spans []tracingtest.Span
	eventually(t, 20*time.Second, "every span of the order's trace", func() bool {
		spans = col.Trace(traceID)
		got := map[string]int{}
		for _, sp := range spans {
			got[strings.TrimPrefix(sp.Service, "jethook-")+"/"+sp.Name]++
		}
		for k, n := range want {
			if got[k] < n {
				return false
			}
		}
		return true
	})
	tr := newTraceView(t, spans)

	post := tr.one("jethook-orders", "POST /orders")
	tr.expect(post, clientSpan, tracepb.Span_SPAN_KIND_SERVER, map[string]string{
		"http.route": "/orders", "http.request.method": "POST", "http.response.status_code": "201",
		"jethook.event_id": o.EventID, "jethook.order_id": o.OrderID,
	})
	send := tr.one("jethook-orders", "send ORDERS")
	tr.expect(send, post.SpanID, tracepb.Span_SPAN_KIND_PRODUCER, map[string]string{
		"messaging.system": "nats", "messaging.operation.type": "send", "messaging.destination.name": "orders.paid." + o.OrderID,
		"messaging.message.id": o.EventID, "jethook.event_id": o.EventID,
	})

	// Both deliveries continue from the publish; each has one attempt.
	var delivered tracingtest.Span
	failed := 0
	for _, p := range tr.all("jethook-dispatcher", "process ORDERS") {
		tr.expect(p, send.SpanID, tracepb.Span_SPAN_KIND_CONSUMER, map[string]string{
			"messaging.system": "nats", "messaging.operation.type": "process", "messaging.destination.name": "orders.paid." + o.OrderID,
			"messaging.consumer.group.name": "wh-sub_notifier", "jethook.event_id": o.EventID,
		})
		attempt := tr.childOf(p, "POST")
		tr.expect(attempt, p.SpanID, tracepb.Span_SPAN_KIND_CLIENT, map[string]string{
			"http.request.method": "POST", "server.address": "127.0.0.1", "jethook.event_id": o.EventID,
		})
		switch attempt.Attrs["http.response.status_code"] {
		case "503":
			failed++
			if !attempt.Error || !p.Error || attempt.Attrs["error.type"] != "503" {
				t.Errorf("a refused attempt is not marked failed: %s %v; delivery %s", attempt, attempt.Attrs, p)
			}
		case "200":
			delivered = attempt
			if attempt.Error || p.Error {
				t.Errorf("the delivered attempt is marked failed: %s; delivery %s", attempt, p)
			}
		default:
			t.Errorf("attempt with status %q", attempt.Attrs["http.response.status_code"])
		}
	}
	if failed < 1 || delivered.SpanID == "" {
		t.Fatalf("%d refused attempts and no delivered one:\n%s", failed, tracingtest.Dump(spans))
	}

	receive := tr.one("jethook-notifier", "POST /webhook/order-paid")
	tr.expect(receive, delivered.SpanID, tracepb.Span_SPAN_KIND_SERVER, map[string]string{
		"http.response.status_code": "200", "http.route": "/webhook/order-paid",
	})
	handoff := tr.one("jethook-notifier", "send NOTIFICATIONS")
	tr.expect(handoff, receive.SpanID, tracepb.Span_SPAN_KIND_PRODUCER, map[string]string{
		"messaging.destination.name": "notifications.order-paid", "messaging.message.id": o.EventID, "jethook.order_id": o.OrderID,
	})
	worker := tr.one("jethook-notifier", "process NOTIFICATIONS")
	tr.expect(worker, handoff.SpanID, tracepb.Span_SPAN_KIND_CONSUMER, map[string]string{
		"messaging.consumer.group.name": "notifier-email", "jethook.outcome": "sent",
	})
	mail := tr.one("jethook-notifier", "send email")
	tr.expect(mail, worker.SpanID, tracepb.Span_SPAN_KIND_CLIENT, map[string]string{
		"jethook.smtp.code": "250", "jethook.event_id": o.EventID,
	})
	if mail.Attrs["jethook.smtp.reply"] == "" {
		t.Errorf("the email's span has no SMTP reply: %v", mail.Attrs)
	}

	// One trace per order: no span that names the event is elsewhere.
	for _, sp := range col.Spans() {
		if sp.Attrs["jethook.event_id"] == o.EventID && sp.TraceID != traceID {
			t.Errorf("a span of the order is in another trace: %s", sp)
		}
	}
}

// createTracedOrder posts an order as a traced client would, with its
// traceparent.
func (s *system) createTracedOrder(traceparent string) createdOrder {
	s.t.Helper()
	body := `{"product_name":"Book","quantity":2,"price_per_item":10.50,"customer_email":"trace@example.com"}`
	req, _ := http.NewRequest(http.MethodPost, s.ordersURL+"/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", traceparent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var o createdOrder
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &o) != nil {
		s.t.Fatalf("POST /orders = %d %s", resp.StatusCode, b)
	}
	return o
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// traceView finds spans of one trace by service and name.
type traceView struct {
	t     *testing.T
	spans []tracingtest.Span
}

func newTraceView(t *testing.T, spans []tracingtest.Span) *traceView {
	return &traceView{t: t, spans: spans}
}

func (v *traceView) all(service, name string) []tracingtest.Span {
	var out []tracingtest.Span
	for _, s := range v.spans {
		if s.Service == service && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func (v *traceView) one(service, name string) tracingtest.Span {
	v.t.Helper()
	got := v.all(service, name)
	if len(got) != 1 {
		v.t.Fatalf("%d spans %q of %s, want 1:\n%s", len(got), name, service, tracingtest.Dump(v.spans))
	}
	return got[0]
}

func (v *traceView) childOf(parent tracingtest.Span, name string) tracingtest.Span {
	v.t.Helper()
	var got []tracingtest.Span
	for _, s := range v.spans {
		if s.ParentID == parent.SpanID && s.Name == name {
			got = append(got, s)
		}
	}
	if len(got) != 1 {
		v.t.Fatalf("%d spans %q under %s, want 1:\n%s", len(got), name, parent, tracingtest.Dump(v.spans))
	}
	return got[0]
}

// expect checks a span's parent, kind and attributes.
func (v *traceView) expect(s tracingtest.Span, parentID string, kind tracepb.Span_SpanKind, attrs map[string]string) {
	v.t.Helper()
	if s.ParentID != parentID || s.Kind != kind {
		v.t.Errorf("%s: want parent %s, kind %s", s, parentID, kind)
	}
	for k, want := range attrs {
		if got := s.Attrs[k]; got != want {
			v.t.Errorf("%s: %s = %q, want %q", s, k, got, want)
		}
	}
}
