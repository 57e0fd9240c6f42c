package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jethook/jethook/dispatcher/internal/config"
	"github.com/jethook/jethook/dispatcher/internal/deliver"
	sharedconfig "github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/service"
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
	conn, err := service.Open(name, "DISPATCHER_ADDR", cfg.Addr, cfg.NATS, logger)
	if err != nil {
		return err
	}

	reg := metrics.NewRegistry()
	d := deliver.New(conn.NC, conn.JS, deliver.Settings{
		URL:         cfg.WebhookURL,
		Secrets:     cfg.Secrets,
		RetryBase:   cfg.RetryBase,
		RetryMax:    cfg.RetryMax,
		MaxDeliver:  cfg.MaxDeliver,
		HTTPTimeout: cfg.HTTPTimeout,
		Concurrency: cfg.Concurrency,
		Replicas:    cfg.StreamReplicas,
		Timings:     cfg.Timings(),
	}, logger, deliver.NewHTTPClient(cfg.HTTPTimeout, cfg.Concurrency), deliver.NewMetrics(reg))
	app := service.NewApp(service.AppConfig{Name: name, Logger: logger, Registry: reg, Ready: d.Ready})
	logger.Info("dispatching to", "webhook_url", sharedconfig.RedactURL(cfg.WebhookURL), "version", deliver.Version)
	return service.Run(ctx, logger, conn, app, d.Run)
}
