// Package service holds what every jethook binary does the same way: open
// its listener and NATS connection, build its Fiber app with problem+json
// errors, request spans, logs and metrics, health and /metrics, run its background
// work, and shut down cleanly on SIGTERM.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/health"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/problem"
)

// ShutdownTimeout bounds a clean stop, well inside the usual 30 s grace
// period of orchestrators.
const ShutdownTimeout = 10 * time.Second

// WorkBudget is the part of ShutdownTimeout that background work may take
// to stop (in-flight messages finishing and settling); the rest is kept
// for draining the NATS connection. Services validate their consumer
// timings against it.
const WorkBudget = ShutdownTimeout - 2*time.Second

// Conn is a service's listener and NATS connection, opened together so
// that a taken port fails the start before anything runs in the background.
type Conn struct {
	Listener net.Listener
	NC       *nats.Conn
	JS       jetstream.JetStream
	// lost says why the NATS connection closed for good (the server
	// refused the credentials); Run stops the service on it.
	lost <-chan error
}

// Open listens on addr (named by addrVar in errors) and connects to NATS as
// "jethook-<name>" with the settings of natsCfg. The connection retries
// forever, so Open succeeds while NATS is still away; only a server that
// refuses the credentials ends it, and then Run stops the service.
func Open(name, addrVar, addr string, natsCfg config.NATS, logger *slog.Logger) (*Conn, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s=%s: %w", addrVar, addr, err)
	}
	nc, lost, err := natsx.Connect(natsCfg, "jethook-"+name, logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		ln.Close()
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Conn{Listener: ln, NC: nc, JS: js, lost: lost}, nil
}

// AppConfig describes a service's HTTP app.
type AppConfig struct {
	Name     string
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Observe, when set, sees every answered request (the service's own
	// counters by status, including answers of the error handler).
	Observe func(c *fiber.Ctx, route string, status int)
	// BodyLimit bounds request bodies; 0 means Fiber's default (4 MiB).
	BodyLimit int
	// Ready reports why the service is not ready, for GET /readyz.
	Ready func(context.Context) error
}

// NewApp returns a Fiber app that answers every error as problem+json,
// logs and counts every request, and serves /healthz, /readyz and /metrics.
// The service adds its own routes.
func NewApp(cfg AppConfig) *fiber.App {
	requests := metrics.NewHTTP(cfg.Registry, metrics.HTTPConfig{Service: cfg.Name, Logger: cfg.Logger, Observe: cfg.Observe})
	app := fiber.New(fiber.Config{
		AppName:               "jethook-" + cfg.Name,
		DisableStartupMessage: true,
		ErrorHandler:          requests.ErrorHandler(problem.ErrorHandler(cfg.Logger)),
		BodyLimit:             cfg.BodyLimit,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           60 * time.Second,
	})
	// The span is outermost, so that it sees the status the request
	// middleware's error handling settles on.
	app.Use(traceRequests())
	app.Use(requests.Middleware())
	metrics.Register(app, cfg.Registry)
	health.Register(app, cfg.Ready)
	return app
}

// Run serves app on conn's listener and runs each worker until ctx ends,
// the server fails, the NATS connection is lost for good or a worker
// returns an error. A worker that returns nil is simply done
// (provisioning, for instance). Then it stops accepting
// HTTP, lets in-flight requests finish, cancels the workers and waits for
// them, and drains the NATS connection while it sends the spans still
// waiting (tracing.Shutdown), all within ShutdownTimeout. It
// returns the failure that stopped the service, or nil.
func Run(ctx context.Context, logger *slog.Logger, conn *Conn, app *fiber.App, workers ...func(context.Context) error) error {
	workCtx, cancelWork := context.WithCancel(ctx)
	defer cancelWork()

	serveErr := make(chan error, 1)
	go func() { serveErr <- app.Listener(conn.Listener) }()
	workErr := make(chan error, len(workers))
	for _, w := range workers {
		go func() { workErr <- w(workCtx) }()
	}
	logger.Info("listening", "addr", conn.Listener.Addr().String())

	var failure error
	pending := len(workers)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-serveErr:
			failure = fmt.Errorf("http server: %w", err)
			break wait
		case err := <-conn.lost:
			failure = err
			break wait
		case err := <-workErr:
			pending--
			if err != nil && !errors.Is(err, context.Canceled) {
				failure = err
				break wait
			}
		}
	}
	logger.Info("shutting down")
	cancelWork()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := app.ShutdownWithContext(shutdownCtx); err != nil {
		logger.Warn("http shutdown", "error", err)
	}
	// Shutdown only stops a server that has started; closing the listener
	// too keeps a server that was about to start from serving afterwards.
	_ = conn.Listener.Close()
waitWorkers:
	for ; pending > 0; pending-- {
		select {
		case <-workErr:
		case <-shutdownCtx.Done():
			logger.Error("background work did not stop in time")
			break waitWorkers
		}
	}
	// The last spans ended with the work; they are sent while the
	// connection drains, within the same budget.
	flushed := flushTraces(shutdownCtx, logger)
	if err := natsx.Drain(shutdownCtx, conn.NC); err != nil {
		logger.Warn("NATS drain", "error", err)
	}
	<-flushed
	logger.Info("stopped")
	return failure
}

// Exit prints err to standard error, one line per problem prefixed with the
// service's name (a configuration error names each bad variable on its own
// line), and exits with status 1.
func Exit(name string, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, line)
	}
	os.Exit(1)
}
