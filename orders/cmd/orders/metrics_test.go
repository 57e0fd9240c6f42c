package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/jethook/jethook/shared/metrics/metricstest"
	"github.com/jethook/jethook/shared/natstest"
)

// TestMetrics drives real requests through the service and reads
// /metrics as Prometheus would.
func TestMetrics(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)

	// Before any order, every rejection reason is already exported at 0.
	fams := metricstest.Scrape(t, s.base+"/metrics")
	for _, reason := range []string{"malformed", "invalid", "conflict", "too_large", "unsupported_media_type", "unavailable", "not_found"} {
		if v, ok := fams.Value("jethook_orders_rejected_total", "reason", reason); !ok || v != 0 {
			t.Errorf("before traffic, rejected_total{reason=%q} = %v (present %v), want 0", reason, v, ok)
		}
	}

	requests := []struct {
		name string
		body string
		want int
	}{
		{"valid", validOrder, http.StatusCreated},
		{"invalid", `{"product_name":"Book","quantity":0,"price_per_item":1,"customer_email":"ada@example.com"}`, http.StatusUnprocessableEntity},
		{"malformed", `{"product_name":`, http.StatusBadRequest},
	}
	var created orderView
	for _, r := range requests {
		got := post(t, s.base+"/orders", "application/json", "", []byte(r.body))
		if got.status != r.want {
			t.Fatalf("%s order: %d %s, want %d", r.name, got.status, got.body, r.want)
		}
		if got.status == http.StatusCreated {
			created = decodeOrder(t, got.body)
		}
	}
	for _, path := range []string{"/orders/" + created.OrderID, "/orders/0193a0c4-0000-7000-8000-000000000000"} {
		resp, err := http.Get(s.base + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	fams = metricstest.Scrape(t, s.base+"/metrics")
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"created", "jethook_orders_created_total", nil, 1},
		{"rejected invalid", "jethook_orders_rejected_total", []string{"reason", "invalid"}, 1},
		{"rejected malformed", "jethook_orders_rejected_total", []string{"reason", "malformed"}, 1},
		{"rejected not found", "jethook_orders_rejected_total", []string{"reason", "not_found"}, 1},
		{"rejected conflict", "jethook_orders_rejected_total", []string{"reason", "conflict"}, 0},
		{"publishes timed", "jethook_orders_publish_duration_seconds", nil, 1},
		{"publish errors", "jethook_orders_publish_errors_total", nil, 0},
		{"POST 201", "jethook_http_requests_total", []string{"service", "orders", "method", "POST", "route", "/orders", "status", "201"}, 1},
		{"POST 422", "jethook_http_requests_total", []string{"route", "/orders", "status", "422"}, 1},
		{"POST 400", "jethook_http_requests_total", []string{"route", "/orders", "status", "400"}, 1},
		{"GET 200", "jethook_http_requests_total", []string{"method", "GET", "route", "/orders/:id", "status", "200"}, 1},
		{"GET 404", "jethook_http_requests_total", []string{"route", "/orders/:id", "status", "404"}, 1},
		{"POST latency", "jethook_http_request_duration_seconds", []string{"service", "orders", "route", "/orders"}, 3},
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
