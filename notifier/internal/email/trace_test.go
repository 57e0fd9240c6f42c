package email

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

// TestSendSpans: each send is a client span under the caller's, with the
// relay's address and its reply: 250 for a message it took, the code and
// reply of a refusal, marked failed.
func TestSendSpans(t *testing.T) {
	rec := tracingtest.Record(t)
	mail := smtptest.Start(t)
	mail.RejectRecipients(func(addr string) bool { return addr == "gone@example.com" })
	s := Traced(newSender(t, mail.Addr, nil), mail.Addr)

	ctx, parent := tracing.Tracer().Start(context.Background(), "process NOTIFICATIONS")
	ok := NewMessage(sampleEvent())
	if err := s.Send(ctx, ok, noCommit); err != nil {
		t.Fatal(err)
	}
	refused := ok
	refused.To = "gone@example.com"
	if err := s.Send(ctx, refused, noCommit); err == nil {
		t.Fatal("a rejected recipient was sent to")
	}
	parent.End()

	host, port, _ := net.SplitHostPort(mail.Addr)
	var sends []map[string]string
	for _, sp := range rec.Ended() {
		if sp.Name() != "send email" {
			continue
		}
		if sp.SpanKind() != trace.SpanKindClient || sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("send span: kind %s parent %s", sp.SpanKind(), sp.Parent().SpanID())
		}
		attrs := tracingtest.Attrs(sp)
		attrs["status"] = sp.Status().Code.String()
		sends = append(sends, attrs)
	}
	if len(sends) != 2 {
		t.Fatalf("%d send spans, want 2", len(sends))
	}
	for i, want := range []map[string]string{
		{"status": "Unset", "jethook.smtp.code": "250", "server.address": host, "server.port": port,
			"jethook.event_id": ok.EventID, "jethook.order_id": ok.OrderID},
		{"status": "Error", "jethook.smtp.code": "550", "jethook.smtp.stage": StageRcpt, "error.type": "550"},
	} {
		for k, v := range want {
			if sends[i][k] != v {
				t.Errorf("send %d: %s = %q, want %q (all: %v)", i+1, k, sends[i][k], v, sends[i])
			}
		}
		if sends[i]["jethook.smtp.reply"] == "" {
			t.Errorf("send %d has no SMTP reply: %v", i+1, sends[i])
		}
	}
}
