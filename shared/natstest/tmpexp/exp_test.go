package tmpexp

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natstest"
)

func TestLatency(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, _ := nats.Connect(srv.URL())
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	c, _ := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	got := make(chan time.Time, 1)
	go func() {
		for {
			b, err := c.Fetch(32, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return
			}
			for m := range b.Messages() {
				got <- time.Now()
				m.Ack()
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	var tot time.Duration
	for i := 0; i < 50; i++ {
		s := time.Now()
		js.Publish(ctx, "s.x", []byte("x"))
		pub := time.Since(s)
		r := <-got
		tot += r.Sub(s)
		if i < 5 {
			t.Logf("pub %v deliver %v", pub, r.Sub(s))
		}
	}
	t.Logf("avg %v", tot/50)
}
