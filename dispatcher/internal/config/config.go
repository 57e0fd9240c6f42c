package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	sharedconfig "github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/webhook"
)

// Defaults of the dispatcher's own variables.
const (
	DefaultAddr        = "127.0.0.1:8082"
	DefaultWebhookURL  = "http://127.0.0.1:8081/webhook/order-paid"
	DefaultRetryBase   = time.Second
	DefaultRetryMax    = time.Hour
	DefaultMaxDeliver  = 15
	DefaultHTTPTimeout = 5 * time.Second
	DefaultConcurrency = 8
)

// Config is everything the dispatcher reads from the environment.
type Config struct {
	sharedconfig.Common

	// Addr is where the health endpoints listen (DISPATCHER_ADDR).
	Addr string
	// WebhookURL receives every order.paid event (NOTIFICATION_WEBHOOK_URL).
	WebhookURL string
	// Secrets sign each webhook; more than one during a rotation
	// (WEBHOOK_SECRET, comma-separated). webhook.Secret prints redacted.
	Secrets []webhook.Secret
	// RetryBase and RetryMax bound the exponential backoff between attempts.
	RetryBase time.Duration
	RetryMax  time.Duration
	// MaxDeliver is how many delivery attempts an event gets before it is
	// dead-lettered.
	MaxDeliver int
	// HTTPTimeout bounds one whole attempt, response body included.
	HTTPTimeout time.Duration
	// Concurrency is how many webhooks are in flight at most.
	Concurrency int
}

// Load reads the configuration through getenv and reports every bad
// variable at once, one error each, naming the variable. The webhook secret
// never appears in an error.
func Load(getenv func(string) string) (Config, error) {
	e := sharedconfig.New(getenv)
	cfg := Config{
		Common:     e.LoadCommon(),
		Addr:       e.Addr("DISPATCHER_ADDR", DefaultAddr),
		WebhookURL: e.URL("NOTIFICATION_WEBHOOK_URL", DefaultWebhookURL, "http", "https"),
	}

	var secretErr error
	if raw := e.Required("WEBHOOK_SECRET", "set one or more whsec_ secrets, comma-separated"); raw != "" {
		secrets, err := webhook.ParseSecrets(raw)
		if err != nil {
			// The parse error describes the problem without the secret
			// text, so it is safe to show.
			secretErr = fmt.Errorf("invalid WEBHOOK_SECRET: %w", err)
		}
		cfg.Secrets = secrets
	}

	// The retry bounds are read on their own so that their relation is
	// only checked when both are valid; a bad RETRY_BASE should not also
	// blame RETRY_MAX.
	retry := sharedconfig.New(getenv)
	cfg.RetryBase = retry.Duration("RETRY_BASE", DefaultRetryBase, 10*time.Millisecond, time.Hour)
	cfg.RetryMax = retry.Duration("RETRY_MAX", DefaultRetryMax, 10*time.Millisecond, 24*time.Hour)
	var orderErr error
	if retry.Err() == nil && cfg.RetryMax < cfg.RetryBase {
		orderErr = fmt.Errorf("invalid RETRY_MAX=%q: must be at least RETRY_BASE (%s)", strings.TrimSpace(getenv("RETRY_MAX")), cfg.RetryBase)
	}

	// The remaining variables get an Env of their own as well, so that the
	// errors come out in the order of the documentation.
	rest := sharedconfig.New(getenv)
	cfg.MaxDeliver = rest.Int("MAX_DELIVER", DefaultMaxDeliver, 1, 1000)
	cfg.HTTPTimeout = rest.Duration("HTTP_TIMEOUT", DefaultHTTPTimeout, 100*time.Millisecond, 5*time.Minute)
	cfg.Concurrency = rest.Int("DISPATCH_CONCURRENCY", DefaultConcurrency, 1, 256)

	var timingErr error
	if rest.Err() == nil {
		if err := cfg.Timings().Validate(service.WorkBudget); err != nil {
			timingErr = fmt.Errorf("invalid HTTP_TIMEOUT=%s: the delivery timings derived from it do not fit: %w", cfg.HTTPTimeout, err)
		}
	}
	if err := errors.Join(e.Err(), secretErr, retry.Err(), orderErr, rest.Err(), timingErr); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Margins of the delivery timings.
const (
	// ackWaitMargin is added to the HTTP timeout for the consumer's
	// AckWait: the heartbeat keeps a live attempt's event from being
	// redelivered anyway, so AckWait only decides how soon the event of a
	// dispatcher that died mid-attempt goes out again.
	ackWaitMargin = 5 * time.Second
	// shutdownGrace is how long in-flight attempts may run on at
	// shutdown before they are cancelled and redelivered later.
	shutdownGrace = 4 * time.Second
)

// Timings are the delivery consumer's clocks, all derived here from
// HTTP_TIMEOUT: AckWait is the HTTP timeout plus a margin, the heartbeat a
// quarter of it, a message may take one whole attempt plus a second to
// settle its outcome, and shutdown leaves in-flight attempts a grace.
func (c Config) Timings() consume.Timings {
	ackWait := c.HTTPTimeout + ackWaitMargin
	return consume.Timings{
		AckWait:        ackWait,
		Heartbeat:      ackWait / 4,
		MessageTimeout: c.HTTPTimeout + time.Second,
		SettleTimeout:  min(3*time.Second, ackWait/2),
		ShutdownGrace:  shutdownGrace,
	}
}
