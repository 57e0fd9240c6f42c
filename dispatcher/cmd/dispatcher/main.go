package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/config"
	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/shared/health"
	"github.com/jethook/jethook/shared/logs"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/problem"
)

const service = "dispatcher"

// Shutdown budget: the whole stop stays within 10 s with the default
// HTTP timeout, the HTTP server first, then the in-flight webhooks (bounded
// by deliver.DefaultShutdownGrace), then the NATS drain.
const (
	httpShutdownTimeout = 2 * time.Second
	drainTimeout        = 2 * time.Second
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintf(os.Stderr, "%s: %s\n", service, line)
		}
		os.Exit(1)
	}
}

// run starts the dispatcher and blocks until ctx ends or SIGINT/SIGTERM
// arrives, then shuts down cleanly and returns nil. Logs go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(args) > 1 {
		return fmt.Errorf("unexpected arguments %q: the %s is configured by environment variables", args[1:], service)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := logs.New(cfg.LogFormat, stdout, service)

	// The listener comes first so that a taken port fails the start at
	// once, before anything runs in the background.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on DISPATCHER_ADDR=%s: %w", cfg.Addr, err)
	}
	nc, err := natsx.Connect(cfg.NATSURL, "jethook-"+service, logger)
	if err != nil {
		ln.Close()
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		ln.Close()
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}

	reg := metrics.NewRegistry()
	d := deliver.New(nc, js, deliver.Settings{
		URL:         cfg.WebhookURL,
		Secrets:     cfg.Secrets,
		RetryBase:   cfg.RetryBase,
		RetryMax:    cfg.RetryMax,
		MaxDeliver:  cfg.MaxDeliver,
		HTTPTimeout: cfg.HTTPTimeout,
		Concurrency: cfg.Concurrency,
		Replicas:    cfg.StreamReplicas,
	}, logger, deliver.NewHTTPClient(cfg.HTTPTimeout, cfg.Concurrency), deliver.NewMetrics(reg))

	requests := metrics.NewHTTP(reg, metrics.HTTPConfig{Service: service, Logger: logger})
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ErrorHandler:          requests.ErrorHandler(problem.ErrorHandler(logger)),
		ReadTimeout:           5 * time.Second,
		WriteTimeout:          5 * time.Second,
		IdleTimeout:           60 * time.Second,
	})
	app.Use(requests.Middleware())
	metrics.Register(app, reg)
	health.Register(app, d.Ready)

	serveErr := make(chan error, 1)
	go func() { serveErr <- app.Listener(ln) }()
	dispatchErr := make(chan error, 1)
	go func() { dispatchErr <- d.Run(ctx) }()
	logger.Info("dispatcher listening", "addr", ln.Addr().String(), "webhook_url", redact(cfg.WebhookURL),
		"version", deliver.Version)

	var failure error
	dispatched := false
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failure = fmt.Errorf("http server: %w", err)
	case failure = <-dispatchErr:
		dispatched = true
	}
	stop()
	logger.Info("shutting down")

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	if err := app.ShutdownWithContext(shutdownCtx); err != nil {
		logger.Warn("http shutdown", "error", err.Error())
	}
	if !dispatched {
		if err := <-dispatchErr; err != nil && failure == nil {
			failure = err
		}
	}
	drain(nc, logger)
	logger.Info("stopped")
	return failure
}

// drain lets the connection flush the last acks and naks, then closes it.
func drain(nc *nats.Conn, logger *slog.Logger) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(drainTimeout):
		logger.Warn("nats drain timed out, closing")
		nc.Close()
	}
}

// redact hides a password in the receiver URL before it is logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Redacted()
}
