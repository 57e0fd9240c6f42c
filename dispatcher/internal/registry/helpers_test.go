package registry_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
)

var testKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

// clock is a settable time for stepping through grace periods.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	srv   *natstest.Server
	js    jetstream.JetStream
	reg   *registry.Registry
	clock *clock
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// start runs a nats-server and a provisioned registry on it.
func start(t *testing.T) *env {
	t.Helper()
	srv := natstest.RunServer(t)
	e := &env{srv: srv, clock: newClock()}
	_, e.js = natstest.Connect(t, srv.URL())
	e.reg = newRegistry(t, e.js, testKey, e.clock)
	return e
}

// newRegistry is one dispatcher replica's registry, on its own connection
// when js is.
func newRegistry(t *testing.T, js jetstream.JetStream, key [32]byte, c *clock) *registry.Registry {
	t.Helper()
	opts := registry.Options{RewatchWait: 50 * time.Millisecond}
	if c != nil {
		opts.Now = c.Now
	}
	r, err := registry.New(js, key, 1, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Provision(ctx(t)); err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) kv(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := e.js.KeyValue(ctx(t), natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func fields(url string, types ...string) subscription.Fields {
	if len(types) == 0 {
		types = []string{"order.paid"}
	}
	return subscription.Fields{URL: &url, EventTypes: &types}
}

func (e *env) create(t *testing.T, url string) (registry.Entry, string) {
	t.Helper()
	en, secret, err := e.reg.Create(ctx(t), fields(url))
	if err != nil {
		t.Fatal(err)
	}
	return en, secret
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
