package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jethook/jethook/dispatcher/internal/admin"
	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/config"
	"github.com/jethook/jethook/dispatcher/internal/deadletter"
	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/dispatcher/internal/jobs"
	"github.com/jethook/jethook/dispatcher/internal/ping"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	sharedconfig "github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/tracing"
)

const name = "dispatcher"

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		service.Exit(name, err)
	}
}

// run starts the dispatcher and blocks until ctx ends or SIGINT/SIGTERM
// arrives, then shuts down cleanly and returns nil. Logs go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(args) > 1 {
		return fmt.Errorf("unexpected arguments %q: the %s is configured by environment variables", args[1:], name)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := logs.New(cfg.LogFormat, stdout, name)
	// Spans are recorded and exported only when an OTLP endpoint is set.
	if err := tracing.Setup(ctx, getenv, name, logger); err != nil {
		return err
	}
	conn, err := service.Open(name, "DISPATCHER_ADDR", cfg.Addr, cfg.NATS, logger)
	if err != nil {
		return err
	}

	reg := metrics.NewRegistry()
	subs, err := registry.New(conn.JS, cfg.SecretsKey, cfg.StreamReplicas, logger, registry.Options{})
	if err != nil {
		return err
	}
	guard := ssrf.New(cfg.AllowedNetworks)
	// One client for every subscription: per-host connection pools, no
	// limit across hosts, so that a slow endpoint holds only its own.
	client := guard.Client(cfg.HTTPTimeout, subscription.MaxMaxInFlight)
	fleet := deliver.New(conn.NC, conn.JS, subs, deliver.Settings{
		RetryBase:            cfg.RetryBase,
		RetryMax:             cfg.RetryMax,
		MaxDeliver:           cfg.MaxDeliver,
		HTTPTimeout:          cfg.HTTPTimeout,
		Replicas:             cfg.StreamReplicas,
		RedeliverConcurrency: cfg.Concurrency,
		AttemptLogMaxAge:     cfg.AttemptLogMaxAge,
		Breaker: deliver.BreakerSettings{
			Failures: cfg.BreakerFailures, Cooloff: cfg.BreakerCooloff, CooloffMax: cfg.BreakerCooloffMax,
			DisableAfter: cfg.DisableAfter,
		},
		Timings: cfg.Timings(),
	}, logger, client, deliver.NewMetrics(reg))
	recovery := jobs.New(conn.JS, subs, logger, jobs.Options{})
	fleet.Jobs = recovery
	app := service.NewApp(service.AppConfig{Name: name, Logger: logger, Registry: reg, Ready: fleet.Ready, BodyLimit: admin.MaxBodyBytes})
	admin.Register(app, admin.Deps{
		Token: string(cfg.AdminToken), Registry: subs, URLs: guard, Logger: logger,
		StatusChanged: func(_ context.Context, e registry.Entry) { fleet.StatusChanged(e) },
		Attempts:      attempt.Reader{JS: conn.JS},
		DeadLetters:   deadletter.New(conn.JS, logger),
		Jobs:          recovery,
		Pinger: &ping.Pinger{Client: guard.Client(cfg.HTTPTimeout, pingConns), Attempts: attempt.NewLog(conn.JS, logger),
			UserAgent: deliver.UserAgent, Logger: logger},
	})
	logger.Info("dispatching to", "webhook_url", sharedconfig.RedactURL(cfg.WebhookURL), "version", deliver.Version)
	// The fleet provisions every stream and bucket of delivery and of the
	// platform (deliver.Fleet.Provision) before it delivers.
	return service.Run(ctx, logger, conn, app, service.TuneGC(cfg.GOGCSet), fleet.Run, provisionSubscriptions(subs, cfg, logger), recovery.Run)
}

// pingConns bounds the connections kept open for pings, which are rare.
const pingConns = 4

// provisionSubscriptions creates the subscriptions bucket and ensures
// sub_notifier, retrying while NATS is away; until then the admin API
// answers 503.
func provisionSubscriptions(subs *registry.Registry, cfg config.Config, logger *slog.Logger) func(context.Context) error {
	secrets := make([]string, len(cfg.SecretTexts))
	for i, s := range cfg.SecretTexts {
		secrets[i] = string(s)
	}
	return func(ctx context.Context) error {
		var refused error
		err := natsx.Retry(ctx, logger, "provision subscriptions", func(ctx context.Context) error {
			if err := subs.Provision(ctx); err != nil {
				return err
			}
			e, outcome, err := subs.Ensure(ctx, registry.Notifier(cfg.WebhookURL, secrets, cfg.Concurrency))
			if errors.Is(err, registry.ErrInvalid) {
				refused = err // a setting no retry can fix
				return nil
			}
			if err != nil {
				return err
			}
			logger.Info("subscription ensured", "subscription_id", e.Subscription.ID, "outcome", string(outcome), "webhook_url", sharedconfig.RedactURL(cfg.WebhookURL))
			return nil
		})
		if refused != nil {
			return fmt.Errorf("NOTIFICATION_WEBHOOK_URL, WEBHOOK_SECRET: %w", refused)
		}
		return err
	}
}
