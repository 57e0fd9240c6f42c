package deadletter_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
)

// BenchmarkReplay measures a replay of 20,000 dead letters of one
// subscription among as many of another's: enqueue to REDELIVERIES,
// PubAck, delete from DEADLETTER. The dead letters are written straight
// into DEADLETTER in the runtime's shape, for speed.
func BenchmarkReplay(b *testing.B) {
	const n = 20_000
	for b.Loop() {
		b.StopTimer()
		e := platformtest.Start(b)
		events := platformtest.Events(b, 1)
		body, _ := events[0].Marshal()
		var futures []jetstream.PubAckFuture
		for i := range 2 * n {
			owner := []string{subA, subB}[i%2]
			m := nats.NewMsg(natsx.DeadletterSubject(owner, fmt.Sprintf("orders.paid.o%d", i)))
			m.Data = body
			m.Header.Set(consume.HeaderEventID, fmt.Sprintf("evt_%d", i))
			m.Header.Set(consume.HeaderOriginalSubject, fmt.Sprintf("orders.paid.o%d", i))
			m.Header.Set(consume.HeaderOriginalStream, natsx.StreamOrders)
			m.Header.Set(consume.HeaderOriginalSequence, strconv.Itoa(i+1))
			f, err := e.JS.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
			if len(futures) == 1000 {
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						b.Fatal(err)
					case <-time.After(30 * time.Second):
						b.Fatal("no PubAck")
					}
				}
				futures = futures[:0]
			}
		}
		s := store(e)
		b.StartTimer()
		start := time.Now()
		got, err := s.Replay(platformtest.Ctx(b), subA, nil)
		took := time.Since(start)
		if err != nil || got != n {
			b.Fatalf("Replay = %d, %v", got, err)
		}
		b.ReportMetric(float64(n)/took.Seconds(), "dead_letters/s")
	}
}
