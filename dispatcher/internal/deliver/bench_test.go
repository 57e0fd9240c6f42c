package deliver_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
