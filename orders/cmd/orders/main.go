// Command orders serves the orders API: it validates an order, takes the
// payment and publishes order.paid to the ORDERS stream before answering 201.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/orders/internal/api"
	"github.com/jethook/jethook/orders/internal/config"
	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/orders/internal/store"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/tracing"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		service.Exit("orders", err)
	}
}

func run(ctx context.Context, _ []string, getenv func(string) string, stdout, _ io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := logs.New(cfg.LogFormat, stdout, "orders")
	// Spans are recorded and exported only when an OTLP endpoint is set.
	if err := tracing.Setup(ctx, getenv, "orders", logger); err != nil {
		return err
	}
	conn, err := service.Open("orders", "ORDERS_ADDR", cfg.Addr, cfg.NATS, logger)
	if err != nil {
		return err
	}
	nc, js := conn.NC, conn.JS

	reg := metrics.NewRegistry()
	m := api.NewMetrics(reg)
	handler := &api.Handler{Metrics: m, Timeout: cfg.PublishTimeout}
	provisioned := make(chan struct{})
	app := service.NewApp(service.AppConfig{
		Name: "orders", Logger: logger, Registry: reg, Observe: m.Observe, BodyLimit: api.MaxBodyBytes,
		Ready: func(ctx context.Context) error {
			select {
			case <-provisioned:
			default:
				return fmt.Errorf("NATS objects not provisioned yet")
			}
			return natsx.Check(ctx, nc, js, natsx.Requirement{
				Streams: []string{natsx.StreamOrders},
				Buckets: []string{natsx.BucketOrders, natsx.BucketOrdersIdempotency},
			})
		},
	})
	handler.Register(app)

	// Requests answer 503 until the stream and buckets exist; provisioning
	// retries for as long as NATS is away.
	provisioning := func(ctx context.Context) error {
		err := natsx.Retry(ctx, logger, "provision NATS", func(ctx context.Context) error {
			svc, err := provision(ctx, nc, js, cfg, logger, m)
			if err != nil {
				return err
			}
			handler.Service.Store(svc)
			return nil
		})
		if err == nil {
			logger.Info("NATS provisioned", "stream", natsx.StreamOrders, "bucket", natsx.BucketOrders)
			close(provisioned)
		}
		return err
	}
	return service.Run(ctx, logger, conn, app, service.TuneGC(cfg.GOGCSet), provisioning)
}

func provision(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg config.Config, logger *slog.Logger, m *api.Metrics) (*order.Service, error) {
	if !nc.IsConnected() {
		return nil, natsx.ErrNotConnected
	}
	err := natsx.Provision(ctx, js,
		[]jetstream.StreamConfig{natsx.OrdersStream(cfg.StreamReplicas)},
		[]jetstream.KeyValueConfig{natsx.OrdersBucket(cfg.StreamReplicas), natsx.OrdersIdempotencyBucket(cfg.StreamReplicas, cfg.IdempotencyTTL)})
	if err != nil {
		return nil, err
	}
	orders, err := js.KeyValue(ctx, natsx.BucketOrders)
	if err != nil {
		return nil, err
	}
	keys, err := js.KeyValue(ctx, natsx.BucketOrdersIdempotency)
	if err != nil {
		return nil, err
	}
	st, err := store.New(ctx, nc, js, orders, keys, cfg.PublishTimeout, logger)
	if err != nil {
		return nil, err
	}
	return &order.Service{
		Store: st, Publisher: m.Publisher(st), Events: st, Payer: order.SimulatedPayer{}, Logger: logger,
		EventRetention: natsx.OrdersStream(cfg.StreamReplicas).MaxAge,
	}, nil
}
