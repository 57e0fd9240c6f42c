// Package config loads the orders service's settings from the environment.
package config

import (
	"time"

	"github.com/jethook/jethook/shared/config"
)

// Config is everything the orders service reads from its environment.
type Config struct {
	config.Common
	Addr string
	// PublishTimeout bounds the wait for JetStream's PubAck; the request
	// answers 503 after it rather than hang.
	PublishTimeout time.Duration
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL time.Duration
}

// Load reads the configuration through getenv, reporting every bad
// variable by name.
func Load(getenv func(string) string) (Config, error) {
	e := config.New(getenv)
	c := Config{
		Common:         e.LoadCommon(),
		Addr:           e.Addr("ORDERS_ADDR", "127.0.0.1:8080"),
		PublishTimeout: e.Duration("PUBLISH_TIMEOUT", 3*time.Second, 100*time.Millisecond, time.Minute),
		IdempotencyTTL: e.Duration("IDEMPOTENCY_TTL", 24*time.Hour, time.Minute, 30*24*time.Hour),
	}
	return c, e.Err()
}
