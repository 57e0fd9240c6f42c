package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/jethook/jethook/shared/natstest"
)

// BenchmarkCreateOrder posts orders, each with its own Idempotency-Key, from
// 50 clients at once to the service as main runs it, against an embedded
// nats-server, with JSON logs written to a file as in production. The
// figure that counts comes from `make bench`, with every process on its
// own; this one is for profiles of the service's own code:
//
//	go test -run '^$' -bench CreateOrder -benchtime 20000x -cpuprofile cpu.out ./orders/cmd/orders
func BenchmarkCreateOrder(b *testing.B) { benchmarkCreateOrder(b) }

// BenchmarkCreateOrderTraced is BenchmarkCreateOrder with tracing on,
// every request sampled and exported over OTLP/HTTP to a sink on
// 127.0.0.1 that reads and discards: what a span per request and per
// publish costs the service, its export included.
func BenchmarkCreateOrderTraced(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(sink.Close)
	benchmarkCreateOrder(b, "OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL)
}

func benchmarkCreateOrder(b *testing.B, env ...string) {
	ns := natstest.RunServer(b)
	logs, err := os.Create(filepath.Join(b.TempDir(), "orders.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logs.Close() })
	s := startOrdersLogging(b, ns.URL(), true, logs, append([]string{"LOG_FORMAT", "json"}, env...)...)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(25) // 25 × GOMAXPROCS 2 = 50 clients, as in make bench
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := strconv.FormatInt(n.Add(1), 10)
			body := []byte(`{"product_name":"Book","quantity":2,"price_per_item":"10.50","customer_email":"b` + i + `@example.com"}`)
			req, err := http.NewRequest(http.MethodPost, s.base+"/orders", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "bench-"+i)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			// Read to the end, or the connection is not reused.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Errorf("POST /orders = %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
}
