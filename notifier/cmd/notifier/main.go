// Command notifier receives signed order.paid webhooks, queues them in the
// NOTIFICATIONS stream and sends each customer one confirmation email.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/config"
	"github.com/jethook/jethook/notifier/internal/email"
	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/notifier/internal/receive"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/webhook"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		service.Exit("notifier", err)
	}
}

// requirement is what must exist in NATS before the notifier is ready.
var requirement = natsx.Requirement{
	Streams:   []string{natsx.StreamNotifications},
	Consumers: [][2]string{{natsx.StreamNotifications, natsx.ConsumerEmail}},
	Buckets:   []string{natsx.BucketProcessed},
}

func run(ctx context.Context, _ []string, getenv func(string) string, stdout, _ io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := logs.New(cfg.LogFormat, stdout, "notifier")
	conn, err := service.Open("notifier", "NOTIFIER_ADDR", cfg.Addr, cfg.NATS, logger)
	if err != nil {
		return err
	}
	nc, js := conn.NC, conn.JS

	reg := metrics.NewRegistry()
	store := processed.New(js, cfg.ClaimTTL())
	worker := &email.Worker{
		Store:          store,
		Sender:         sender(cfg, logger),
		Logger:         logger,
		Metrics:        email.NewMetrics(reg, js),
		RetryBase:      cfg.EmailRetryBase,
		RetryMax:       cfg.EmailRetryMax,
		MessageTimeout: cfg.SMTPTimeout + 10*time.Second,
		Grace:          5 * time.Second,
		// Whenever pulling fails, the worker provisions again before it
		// pulls: a consumer or stream deleted while the service runs is
		// back within seconds instead of at the next restart.
		Provision: func(ctx context.Context) (jetstream.Consumer, error) {
			return provision(ctx, nc, js, cfg)
		},
	}
	// The worker starts once its stream, bucket and consumer exist; until
	// then /readyz says what is missing.
	emails := func(ctx context.Context) error {
		var cons jetstream.Consumer
		err := natsx.Retry(ctx, logger, "provision NATS", func(ctx context.Context) error {
			c, err := worker.Provision(ctx)
			if err != nil {
				return err
			}
			cons = c
			return nil
		})
		if err != nil {
			return err
		}
		logger.Info("NATS provisioned", "stream", natsx.StreamNotifications, "consumer", natsx.ConsumerEmail, "bucket", natsx.BucketProcessed)
		return worker.Run(ctx, cons)
	}

	handler := &receive.Handler{
		Verifier: webhook.Verifier{Secrets: cfg.Secrets, Tolerance: webhook.DefaultTolerance},
		Conn:     nc,
		JS:       js,
		Store:    store,
		Logger:   logger,
		Metrics:  receive.NewMetrics(reg),
		// Events older than their idempotency records could be replays.
		MaxEventAge: cfg.ProcessedTTL,
	}
	app := receive.NewApp(handler, logger, func(ctx context.Context) error {
		return natsx.Check(ctx, nc, js, requirement)
	})
	logger.Info("email delivery", "smtp_addr", cfg.SMTPAddr)
	return service.Run(ctx, logger, conn, app, emails)
}

// sender picks SMTP when a server is configured and the log otherwise.
func sender(cfg config.Config, logger *slog.Logger) email.Sender {
	if cfg.SMTPAddr == "" {
		return email.LogSender{Logger: logger}
	}
	return &email.SMTPSender{Addr: cfg.SMTPAddr, From: cfg.SMTPFrom, Timeout: cfg.SMTPTimeout}
}

// provision creates or updates the NOTIFICATIONS stream, the idempotency
// bucket and the email worker's consumer.
func provision(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg config.Config) (jetstream.Consumer, error) {
	if !nc.IsConnected() {
		return nil, natsx.ErrNotConnected
	}
	err := natsx.Provision(ctx, js,
		[]jetstream.StreamConfig{natsx.NotificationsStream(cfg.StreamReplicas)},
		[]jetstream.KeyValueConfig{natsx.ProcessedBucket(cfg.StreamReplicas, cfg.ProcessedTTL)})
	if err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamNotifications, email.ConsumerConfig(receive.Subject, cfg.AckWait()))
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s: %w", natsx.ConsumerEmail, err)
	}
	return cons, nil
}
