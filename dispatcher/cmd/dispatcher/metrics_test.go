package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/metrics/metricstest"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/webhook"
)

// TestMetrics sends one event that is delivered, one that is retried once
// and then delivered, one that the receiver answers 404 until it is
// dead-lettered, one whose content it refuses (422, dead-lettered at once),
// and one that can never be delivered, and reads /metrics as Prometheus
// would.
func TestMetrics(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())

	ids := map[string]string{}
	for _, name := range []string{"delivered", "retried", "missing", "refused"} {
		id, err := event.NewID()
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	// answers lists each event's statuses, attempt by attempt; the last
	// one repeats.
	answers := map[string][]int{
		ids["delivered"]: {http.StatusOK},
		ids["retried"]:   {http.StatusInternalServerError, http.StatusOK},
		ids["missing"]:   {http.StatusNotFound},
		ids["refused"]:   {http.StatusUnprocessableEntity},
	}
	var mu sync.Mutex
	seen := map[string]int{}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(webhook.HeaderID)
		mu.Lock()
		n := seen[id]
		seen[id]++
		mu.Unlock()
		statuses := answers[id]
		if len(statuses) == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(statuses[min(n, len(statuses)-1)])
	}))
	t.Cleanup(receiver.Close)

	addr, _ := started(t, map[string]string{
		"NATS_URL":                 srv.URL(),
		"DISPATCHER_ADDR":          "127.0.0.1:0",
		"NOTIFICATION_WEBHOOK_URL": receiver.URL + "/webhook/order-paid",
		"WEBHOOK_SECRET":           mustSecret(t),
		"RETRY_BASE":               "50ms",
		"RETRY_MAX":                "200ms",
		"HTTP_TIMEOUT":             "500ms",
		"MAX_DELIVER":              "2",
	})
	base := "http://" + addr
	eventually(t, 10*time.Second, "/readyz to answer 200", func() bool {
		return status(t, base+"/readyz") == http.StatusOK
	})
	before := metricstest.Scrape(t, base+"/metrics")
	if v, ok := before.Value("jethook_dispatcher_deliveries_total", "outcome", "dead_lettered", "status_class", "5xx"); !ok || v != 0 {
		t.Errorf("before traffic, deliveries_total{dead_lettered,5xx} = %v (present %v), want 0", v, ok)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	publish := func(id string, body []byte) {
		t.Helper()
		subject := event.Subject(uuid.Must(uuid.NewV7()).String())
		if _, err := js.Publish(ctx, subject, body, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		body, err := event.OrderPaid{ID: id, Type: event.TypeOrderPaid, Timestamp: time.Now().UTC(), Data: event.OrderData{
			OrderID: uuid.Must(uuid.NewV7()).String(), CustomerEmail: "ada@example.com", ProductName: "Book",
			Quantity: 1, AmountMinor: 2100, Currency: "USD",
		}}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		publish(id, body)
	}
	// A body without an event id can never become a webhook.
	publish("no-id", []byte(`{"type":"order.paid"}`))

	var fams metricstest.Families
	eventually(t, 10*time.Second, "every event to be settled", func() bool {
		fams = metricstest.Scrape(t, base+"/metrics")
		delivered, _ := fams.Value("jethook_dispatcher_deliveries_total", "outcome", "delivered")
		dead, _ := fams.Value("jethook_dispatcher_deliveries_total", "outcome", "dead_lettered")
		return delivered == 2 && dead == 3
	})

	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"delivered 2xx", "jethook_dispatcher_deliveries_total", []string{"outcome", "delivered", "status_class", "2xx"}, 2},
		{"retry 5xx", "jethook_dispatcher_deliveries_total", []string{"outcome", "retry", "status_class", "5xx"}, 1},
		{"retry 4xx", "jethook_dispatcher_deliveries_total", []string{"outcome", "retry", "status_class", "4xx"}, 1},
		{"dead-lettered 4xx", "jethook_dispatcher_deliveries_total", []string{"outcome", "dead_lettered", "status_class", "4xx"}, 2},
		{"dead-lettered without a post", "jethook_dispatcher_deliveries_total", []string{"outcome", "dead_lettered", "status_class", "none"}, 1},
		{"retries", "jethook_dispatcher_retries_total", nil, 2},
		{"dead letters after max deliveries", "jethook_dispatcher_dead_letters_total", []string{"reason", "max_deliveries"}, 1},
		{"permanent dead letters", "jethook_dispatcher_dead_letters_total", []string{"reason", "permanent"}, 1},
		{"refused content dead-lettered at once", "jethook_dispatcher_dead_letters_total", []string{"reason", "refused"}, 1},
		{"HTTP attempts timed", "jethook_dispatcher_delivery_duration_seconds", nil, 6},
		{"probes counted", "jethook_http_requests_total", []string{"service", "dispatcher", "method", "GET", "route", "/readyz", "status", "200"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := fams.Value(tt.metric, tt.labels...)
			if !ok || got != tt.want {
				t.Errorf("%s%v = %v (present %v), want %v", tt.metric, tt.labels, got, ok, tt.want)
			}
		})
	}
}
