package bench

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// ServeFiber runs the bare Fiber ceiling on addr until ctx ends: POST
// /orders answers 201 with a fixed order-sized body and a Location, with
// no middleware, no logging and no work, so that the orders API can be
// compared with the HTTP stack it runs on. The tool runs it as a child
// process of its own, as the services run, rather than beside the load
// generator in one Go runtime.
func ServeFiber(ctx context.Context, addr string) error {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	body := []byte(`{"order_id":"0193a5b2-7c1d-7aaa-8bbb-0123456789ab","status":"paid","event_id":"evt_0193a5b2-7c1d-7aaa-8bbb-0123456789ac","customer_email":"ada@example.com","product_name":"Bench","quantity":2,"amount_minor":2100,"currency":"USD","created_at":"2026-11-28T10:00:00Z"}`)
	app.Post("/orders", func(c *fiber.Ctx) error {
		c.Location("/orders/0193a5b2-7c1d-7aaa-8bbb-0123456789ab")
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusCreated).Send(body)
	})
	errc := make(chan error, 1)
	go func() { errc <- app.Listen(addr) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return app.ShutdownWithTimeout(5 * time.Second)
	}
}

// ceilingStream is a stream like ORDERS, under another name and subject,
// so that the raw publishes of the ceiling reach no consumer.
func ceilingStream() jetstream.StreamConfig {
	cfg := natsx.OrdersStream(1)
	cfg.Name = "BENCH_CEILING"
	cfg.Description = "jethook-bench: raw publishes of the JetStream ceiling"
	cfg.Subjects = []string{"bench.ceiling.>"}
	return cfg
}

// publishCeiling publishes event-sized messages from workers goroutines for
// d, each waiting for its PubAck as the orders service does for an event:
// a subject per message, Nats-Msg-Id set, the subject expected empty. The
// stream is deleted afterwards.
func publishCeiling(ctx context.Context, js jetstream.JetStream, workers int, d time.Duration, body []byte) (*loadResult, error) {
	cfg := ceilingStream()
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return nil, err
	}
	defer func() {
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = js.DeleteStream(delCtx, cfg.Name)
	}()
	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	per := make([][]sample, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := 0; runCtx.Err() == nil; n++ {
				id := uuid.NewString()
				t := time.Now()
				pubCtx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), requestTimeout)
				_, err := js.Publish(pubCtx, "bench.ceiling."+id, body,
					jetstream.WithMsgID(id),
					jetstream.WithExpectStream(cfg.Name),
					jetstream.WithExpectLastSequencePerSubject(0))
				cancel()
				s := sample{n: n, due: t, latency: time.Since(t), status: 200}
				if err != nil {
					s.status, s.failed = 0, !errors.Is(err, context.Canceled)
				}
				per[w] = append(per[w], s)
			}
		})
	}
	wg.Wait()
	return &loadResult{samples: slices.Concat(per...), elapsed: time.Since(start)}, nil
}
