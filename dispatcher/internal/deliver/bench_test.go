package deliver_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

// BenchmarkDrain measures how fast one subscription's backlog drains to a
// receiver that answers at once: b.N events queued in ORDERS, then the
// fleet started, timed until its consumer has nothing left; alone, and
// beside a subscription to the same events whose endpoint is down, which
// takes its own retries meanwhile. The embedded nats-server runs in the
// same process, so the profile shows both.
func BenchmarkDrain(b *testing.B) {
	for _, tc := range []struct {
		name string
		down bool
	}{{"alone", false}, {"beside a down endpoint", true}} {
		b.Run(tc.name, func(b *testing.B) {
			rc := &receiver{respond: status(http.StatusNoContent)}
			srv := startReceiver(&testing.T{}, rc)
			defer srv.Close()
			set := fastSettings(srv.URL, mustSecret(b))
			set.Concurrency = 32
			t := &testing.T{}
			h := newHarness(t, set)
			ctx := context.Background()
			if tc.down {
				url, types := "http://"+freeAddr(t)+"/down", []string{"order.paid"}
				if _, _, err := h.reg.Create(ctx, subscription.Fields{URL: &url, EventTypes: &types}); err != nil {
					b.Fatal(err)
				}
			}
			e := testkit.OrderPaid(b)
			for i := range b.N {
				e.ID = "evt_bench_" + strconv.Itoa(i)
				body, _ := e.Marshal()
				if _, err := h.js.PublishAsync(event.Subject(e.Data.OrderID), body); err != nil {
					b.Fatal(err)
				}
				if i%4096 == 4095 {
					<-h.js.PublishAsyncComplete()
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
		})
	}
}

// BenchmarkIsolation measures a healthy subscription's latency, from the
// publish of an event to its webhook, with no rate limit, alone and beside a subscription
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
			// At the default 100/s, the loop would measure the rate limit.
			unlimited := func(f *subscription.Fields) { r := subscription.MaxRateLimitPerS; f.RateLimitPerS = &r }
			healthyID, _ := p.create(hs.URL, []string{"order.paid"}, unlimited)
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
