// Command notifier receives signed order.paid webhooks, queues them in the
// NOTIFICATIONS stream and sends each customer one confirmation email.
package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/config"
	"github.com/jethook/jethook/notifier/internal/email"
	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/notifier/internal/receive"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/tracing"
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
	// Spans are recorded and exported only when an OTLP endpoint is set.
	if err := tracing.Setup(ctx, getenv, "notifier", logger); err != nil {
		return err
	}
	conn, err := service.Open("notifier", "NOTIFIER_ADDR", cfg.Addr, cfg.NATS, logger)
	if err != nil {
		return err
	}
	nc, js := conn.NC, conn.JS

	reg := metrics.NewRegistry()
	store := processed.New(js)
	send, err := sender(cfg, logger)
	if err != nil {
		return err
	}
	if tracing.Enabled() {
		send = email.Traced(send, cfg.SMTPAddr)
	}
	emailMetrics := email.NewMetrics(reg, js)
	worker := &email.Worker{
		Store:       store,
		Sender:      send,
		Metrics:     emailMetrics,
		Logger:      logger,
		RetryBase:   cfg.EmailRetryBase,
		RetryMax:    cfg.EmailRetryMax,
		MaxAttempts: cfg.EmailMaxAttempts,
		ClaimLease:  cfg.ClaimLease(),
		CommitLease: cfg.CommitLease(),
	}
	// The email worker runs on the shared consumer runtime, which
	// provisions the stream, bucket and consumer (again, whenever they
	// vanish); until they exist, /readyz says what is missing.
	runner, err := consume.New(consume.Config{
		Stream:      natsx.StreamNotifications,
		Name:        natsx.ConsumerEmail,
		Noun:        "email",
		Concurrency: cfg.EmailWorkers(),
		Timings:     cfg.Timings(),
		Handle:      worker.Handle,
		// NOTIFICATIONS is a work queue: it holds only what is still to
		// be sent, so a consumer created again starts from its beginning
		// and nothing needs a resume point.
		Provision: func(ctx context.Context, _ uint64) (jetstream.Consumer, error) {
			return provision(ctx, nc, js, cfg)
		},
		JS:      js,
		Logger:  logger,
		Observe: emailMetrics.Settled,
	})
	if err != nil {
		return err
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
	logger.Info("email delivery", "smtp_addr", cfg.SMTPAddr, "smtp_tls", cfg.SMTPTLS,
		"smtp_auth", cfg.SMTPUsername != "", "concurrency", cfg.EmailConcurrency, "workers", cfg.EmailWorkers())
	return service.Run(ctx, logger, conn, app, service.TuneGC(cfg.GOGCSet), runner.Run)
}

// sender picks SMTP when a relay is configured and the log otherwise.
func sender(cfg config.Config, logger *slog.Logger) (email.Sender, error) {
	if cfg.SMTPAddr == "" {
		return email.LogSender{Logger: logger}, nil
	}
	var tc *tls.Config
	if cfg.SMTPTLSCA != nil {
		tc = &tls.Config{RootCAs: cfg.SMTPTLSCA, MinVersion: tls.VersionTLS12}
	}
	return email.NewSMTPSender(email.SMTPConfig{
		Addr: cfg.SMTPAddr, From: cfg.SMTPFrom,
		CommandTimeout: cfg.SMTPTimeout, DataTimeout: cfg.SMTPDataTimeout,
		MaxConns: cfg.EmailConcurrency,
		TLS:      cfg.SMTPTLS, TLSConfig: tc,
		Username: cfg.SMTPUsername, Password: string(cfg.SMTPPassword),
	})
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
	return consume.EnsureConsumer(ctx, js, natsx.StreamNotifications, email.ConsumerConfig(receive.Subject, cfg.Timings()), 0)
}
