package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// request appends the complete HTTP request number n of a phase to buf.
type request func(buf []byte, n int) []byte

// sample is one request of the load.
type sample struct {
	n int
	// due is when the request was meant to go out: its start in a closed
	// loop, its slot in the schedule in an open loop, so that time spent
	// waiting for a free connection counts as latency.
	due     time.Time
	latency time.Duration
	status  int
	failed  bool // no answer at all
}

// loadResult is what one load phase observed.
type loadResult struct {
	samples []sample
	elapsed time.Duration
}

// ok returns the samples answered with want.
func (r *loadResult) ok(want int) []sample {
	var s []sample
	for _, x := range r.samples {
		if x.status == want {
			s = append(s, x)
		}
	}
	return s
}

// stats summarises the samples answered with want: their rate over the
// phase and their latency percentiles; other answers are counted apart.
func (r *loadResult) stats(want int) stats {
	st := stats{elapsed: r.elapsed, others: map[int]int{}}
	lat := make([]time.Duration, 0, len(r.samples))
	for _, x := range r.samples {
		switch {
		case x.failed:
			st.failed++
		case x.status == want:
			lat = append(lat, x.latency)
		default:
			st.others[x.status]++
		}
	}
	st.count = len(lat)
	if r.elapsed > 0 {
		st.rate = float64(st.count) / r.elapsed.Seconds()
	}
	st.p50, st.p99 = percentiles(lat)
	return st
}

type stats struct {
	count    int
	failed   int
	others   map[int]int // status → count, for answers other than the wanted one
	rate     float64
	p50, p99 time.Duration
	elapsed  time.Duration
}

// percentiles returns the 50th and 99th percentiles of d (nearest rank).
func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(d))+0.999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return rank(0.50), rank(0.99)
}

// closedLoop runs workers that each send a request as soon as the previous
// one is answered, until limit requests were sent or d has passed.
func closedLoop(ctx context.Context, addr string, workers, limit int, d time.Duration, req request) *loadResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var next atomic.Int64
	start := time.Now()
	samples := drive(addr, workers, req, func() (int, time.Time, bool) {
		n := int(next.Add(1)) - 1
		return n, time.Now(), ctx.Err() == nil && n < limit
	})
	return &loadResult{samples: samples, elapsed: time.Since(start)}
}

// drive runs workers, each with a connection of its own, that take the
// next request from next until it reports none is left, and send it. A
// request's latency counts from when next says it was due.
func drive(addr string, workers int, req request, next func() (n int, due time.Time, ok bool)) []sample {
	per := make([][]sample, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			c := newClient(addr)
			defer c.close()
			var buf []byte
			for {
				n, due, ok := next()
				if !ok {
					return
				}
				buf = req(buf[:0], n)
				status, err := c.do(buf)
				per[w] = append(per[w], sample{n: n, due: due, latency: time.Since(due), status: status, failed: err != nil})
			}
		})
	}
	wg.Wait()
	return slices.Concat(per...)
}

// openLoop sends rate requests per second for d, each at its slot in the
// schedule whether or not earlier ones were answered, over at most conns
// connections. A request that waits for a free connection is late, and its
// latency counts from its slot: back-pressure cannot hide latency.
func openLoop(ctx context.Context, addr string, rate float64, d time.Duration, conns int, req request) *loadResult {
	total := int(rate * d.Seconds())
	type job struct {
		n   int
		due time.Time
	}
	jobs := make(chan job, total)
	start := time.Now()
	done := make(chan []sample, 1)
	go func() {
		done <- drive(addr, conns, req, func() (int, time.Time, bool) {
			j, ok := <-jobs
			return j.n, j.due, ok && ctx.Err() == nil
		})
	}()
	interval := time.Duration(float64(time.Second) / rate)
schedule:
	for n := range total {
		due := start.Add(time.Duration(n) * interval)
		// Timers are coarse: sleeping only for gaps over a millisecond keeps
		// the average rate exact, with bursts no longer than that.
		if wait := time.Until(due); wait > time.Millisecond {
			select {
			case <-ctx.Done():
				break schedule
			case <-time.After(wait):
			}
		}
		jobs <- job{n: n, due: due}
	}
	close(jobs)
	return &loadResult{samples: <-done, elapsed: time.Since(start)}
}
