package jobs_test

import (
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/jobs"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
)

// BenchmarkRecover measures a recovery job over 20,000 events among
// 40,000 in ORDERS (the subscription takes one type of two), from Start
// until the job is done: each matching event enqueued to REDELIVERIES,
// the progress written every second.
func BenchmarkRecover(b *testing.B) {
	const n = 20_000
	for b.Loop() {
		b.StopTimer()
		e := start(b)
		sub := e.subscribe(b, "order.paid")
		since := time.Now()
		events := platformtest.Events(b, n)
		for i := 0; i < n; i += 1000 {
			e.Publish(b, events[i:i+1000]...)
			// Events of another type in between, which the job skips.
			for range 1000 {
				if _, err := e.JS.PublishAsync("orders.refunded.x", []byte(`{}`)); err != nil {
					b.Fatal(err)
				}
			}
		}
		m, _ := e.manager(b, e.JS, jobs.Options{})
		b.StartTimer()
		start := time.Now()
		j, err := m.Start(platformtest.Ctx(b), sub, since, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		s := e.waitDone(b, m, j.ID)
		took := time.Since(start)
		if s.Total != n {
			b.Fatalf("job %+v", s)
		}
		b.ReportMetric(float64(n)/took.Seconds(), "events/s")
	}
}
