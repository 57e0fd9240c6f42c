// Command orders serves the orders API: it validates an order, takes the
// payment and publishes order.paid to the ORDERS stream before answering 201.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/orders/internal/api"
	"github.com/jethook/jethook/orders/internal/config"
	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/orders/internal/store"
	"github.com/jethook/jethook/shared/health"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/problem"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds a clean stop, well inside the usual 30 s grace
// period of orchestrators.
const shutdownTimeout = 10 * time.Second

func run(ctx context.Context, _ []string, getenv func(string) string, stdout, _ io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := logs.New(cfg.LogFormat, stdout, "orders")

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on ORDERS_ADDR=%s: %w", cfg.Addr, err)
	}
	nc, err := natsx.Connect(cfg.NATSURL, "jethook-orders", logger)
	if err != nil {
		ln.Close()
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		ln.Close()
		nc.Close()
		return err
	}

	reg := metrics.NewRegistry()
	m := api.NewMetrics(reg)
	requests := metrics.NewHTTP(reg, metrics.HTTPConfig{Service: "orders", Logger: logger, Observe: m.Observe})
	handler := &api.Handler{Metrics: m, Timeout: cfg.PublishTimeout}
	provisioned := make(chan struct{})
	go func() {
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
	}()

	app := fiber.New(fiber.Config{
		AppName:               "jethook-orders",
		DisableStartupMessage: true,
		ErrorHandler:          requests.ErrorHandler(problem.ErrorHandler(logger)),
		BodyLimit:             api.MaxBodyBytes,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           60 * time.Second,
	})
	app.Use(requests.Middleware())
	metrics.Register(app, reg)
	health.Register(app, func(ctx context.Context) error {
		select {
		case <-provisioned:
		default:
			return fmt.Errorf("NATS objects not provisioned yet")
		}
		return natsx.Check(ctx, nc, js, natsx.Requirement{
			Streams: []string{natsx.StreamOrders},
			Buckets: []string{natsx.BucketOrders, natsx.BucketOrdersIdempotency},
		})
	})
	handler.Register(app)

	serveErr := make(chan error, 1)
	go func() { serveErr <- app.Listener(ln) }()
	logger.Info("orders listening", "addr", ln.Addr().String(), "nats_url", cfg.NATSURL)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		nc.Close()
		return fmt.Errorf("http server: %w", err)
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := app.ShutdownWithContext(shutdownCtx); err != nil {
		logger.Error("http shutdown", "error", err)
	}
	if err := natsx.Drain(shutdownCtx, nc); err != nil {
		logger.Warn("NATS drain", "error", err)
	}
	return nil
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
	st := store.New(nc, js, orders, keys)
	return &order.Service{Store: st, Publisher: m.Publisher(st), Payer: order.SimulatedPayer{}, Logger: logger}, nil
}
