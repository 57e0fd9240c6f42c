package deliver_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

// BenchmarkDrain measures how fast one subscription's backlog drains to a
// receiver that answers at once: b.N events queued in ORDERS, then the
// fleet started, timed until its consumer has nothing left. The embedded
// nats-server runs in the same process, so the profile shows both.
func BenchmarkDrain(b *testing.B) {
	rc := &receiver{respond: status(http.StatusNoContent)}
	srv := startReceiver(&testing.T{}, rc)
	defer srv.Close()
	set := fastSettings(srv.URL, mustSecret(b))
	set.Concurrency = 32
	t := &testing.T{}
	h := newHarness(t, set)
	ctx := context.Background()
	e := testkit.OrderPaid(b)
	var futures []jetstream.PubAckFuture
	for i := range b.N {
		e.ID = "evt_bench_" + itoa(i)
		body, _ := e.Marshal()
		f, err := h.js.PublishAsync(event.Subject(e.Data.OrderID), body)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == 4096 {
			<-h.js.PublishAsyncComplete()
			futures = futures[:0]
		}
	}
	<-h.js.PublishAsyncComplete()
	b.ResetTimer()
	start := time.Now()
	h.start(t)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		c, err := h.js.Consumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(h.subID))
		if err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("the backlog did not drain")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	h.stop(t)
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}

// BenchmarkIsolation measures a healthy subscription's latency, from the
// publish of an event to its webhook, alone and beside a subscription
// whose endpoint answers after 5 s and one whose endpoint is down: the
// p50 and p99 should not move. Each event is published after the last one
// was delivered, so the figure is latency, not queueing.
func BenchmarkIsolation(b *testing.B) {
	for _, tc := range []struct {
		name       string
		neighbours bool
	}{{"alone", false}, {"beside a slow and a down endpoint", true}} {
		b.Run(tc.name, func(b *testing.B) {
			t := &testing.T{}
			p := newPlatform(t, func(s *deliver.Settings) {
				s.HTTPTimeout = 6 * time.Second
				s.Timings.MessageTimeout, s.Timings.AckWait, s.Timings.Heartbeat = 7*time.Second, 10*time.Second, 2*time.Second
			})
			arrived := make(chan struct{}, 1)
			healthy := &receiver{respond: func(_ int, w http.ResponseWriter) {
				w.WriteHeader(http.StatusOK)
				select {
				case arrived <- struct{}{}:
				default:
				}
			}}
			hs := startReceiver(t, healthy)
			defer hs.Close()
			healthyID, _ := p.create(hs.URL, []string{"order.paid"}, nil)
			if tc.neighbours {
				slow := startReceiver(t, &receiver{respond: func(_ int, w http.ResponseWriter) {
					time.Sleep(5 * time.Second)
					w.WriteHeader(http.StatusOK)
				}})
				defer slow.Close()
				p.create(slow.URL, []string{"order.paid"}, nil)
				p.create("http://"+freeAddr(t)+"/down", []string{"order.paid"}, nil)
			}
			stop := p.replica()
			defer stop()
			p.waitConsumer(healthyID)
			var lat []time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				p.publish("")
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
					b.Fatal("the healthy endpoint got nothing within 10 s")
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
		})
	}
}
