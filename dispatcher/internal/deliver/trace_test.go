package deliver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/tracing/tracingtest"
)

// TestAttemptSpans: each attempt is a client span under the delivery's
// span, its traceparent header names that span to the receiver, and a
// failed attempt is marked with its status.
func TestAttemptSpans(t *testing.T) {
	rec := tracingtest.Record(t)
	var mu sync.Mutex
	var parents []string
	statuses := []int{http.StatusServiceUnavailable, http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		parents = append(parents, r.Header.Get("traceparent"))
		w.WriteHeader(statuses[len(parents)-1])
	}))
	defer srv.Close()

	ctx, delivery := tracing.Tracer().Start(context.Background(), "process ORDERS")
	for range statuses {
		_, _ = post(ctx, srv.Client(), target{url: srv.URL + "/hook?token=s3cret"}, "evt_1", []byte(`{"id":"evt_1"}`))
	}
	delivery.End()

	var attempts []trace.SpanContext
	for i, s := range rec.Ended() {
		if s.Name() != "POST" {
			continue
		}
		attempts = append(attempts, s.SpanContext())
		if s.SpanKind() != trace.SpanKindClient || s.Parent().SpanID() != delivery.SpanContext().SpanID() {
			t.Errorf("attempt %d: kind %s parent %s", i+1, s.SpanKind(), s.Parent().SpanID())
		}
		attrs := tracingtest.Attrs(s)
		if strings.Contains(attrs["url.full"], "s3cret") || attrs["server.address"] != "127.0.0.1" || attrs["jethook.event_id"] != "evt_1" ||
			attrs["http.request.method"] != "POST" {
			t.Errorf("attempt %d: attributes %v", i+1, attrs)
		}
		failed := s.Status().Code.String() == "Error"
		switch attrs["http.response.status_code"] {
		case "503":
			if !failed || attrs["error.type"] != "503" {
				t.Errorf("the 503 attempt: status %s, error.type %q", s.Status(), attrs["error.type"])
			}
		case "200":
			if failed {
				t.Errorf("the 200 attempt is marked failed: %s", s.Status())
			}
		default:
			t.Errorf("attempt %d: status code %q", i+1, attrs["http.response.status_code"])
		}
	}
	if len(attempts) != 2 || len(parents) != 2 {
		t.Fatalf("%d attempt spans, %d requests", len(attempts), len(parents))
	}
	for i, sc := range attempts {
		if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; parents[i] != want {
			t.Errorf("attempt %d sent traceparent %q, want %q", i+1, parents[i], want)
		}
	}
}
