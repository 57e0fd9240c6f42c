package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/webhook"
)

// Config is everything the notifier reads from its environment.
type Config struct {
	config.Common
	// Addr is where the webhook receiver and the health endpoints listen.
	Addr string
	// Secrets verify incoming webhooks; a message signed with any of them is
	// accepted, so a new secret can be rolled out next to the old one.
	Secrets []webhook.Secret
	// SMTPAddr is the mail server as host:port; empty means the email is
	// written to the log instead of sent.
	SMTPAddr string
	// SMTPFrom is the envelope sender and From header of every email.
	SMTPFrom string
	// SMTPTimeout bounds one whole SMTP conversation.
	SMTPTimeout time.Duration
	// ProcessedTTL is how long an event id is remembered as processed. It
	// must outlast the dispatcher's longest retry span, or a late retry of
	// an old webhook would send the email again.
	ProcessedTTL time.Duration
	// EmailRetryBase and EmailRetryMax bound the exponential delay before a
	// failed email is tried again.
	EmailRetryBase time.Duration
	EmailRetryMax  time.Duration
}

// AckWait is how long JetStream waits for the email worker to settle a
// message before it redelivers it: one SMTP conversation plus a margin for
// the KV round trips around it.
func (c Config) AckWait() time.Duration { return c.SMTPTimeout + 20*time.Second }

// ClaimTTL is the lifetime of a worker's claim on an event id. It outlasts
// AckWait, so a live worker never loses its claim, and expires on its own,
// so the claim of a crashed worker does not block the redelivered message
// for longer than a minute beyond AckWait.
func (c Config) ClaimTTL() time.Duration { return c.AckWait() + time.Minute }

// Load reads the configuration through getenv, reporting every bad
// variable by name.
func Load(getenv func(string) string) (Config, error) {
	e := config.New(getenv)
	c := Config{
		Common:         e.LoadCommon(),
		Addr:           e.Addr("NOTIFIER_ADDR", "127.0.0.1:8081"),
		SMTPFrom:       e.String("SMTP_FROM", "orders@example.com"),
		SMTPTimeout:    e.Duration("SMTP_TIMEOUT", 10*time.Second, time.Second, 5*time.Minute),
		ProcessedTTL:   e.Duration("PROCESSED_TTL", 72*time.Hour, time.Minute, 8760*time.Hour),
		EmailRetryBase: e.Duration("EMAIL_RETRY_BASE", time.Second, time.Millisecond, time.Hour),
		EmailRetryMax:  e.Duration("EMAIL_RETRY_MAX", 5*time.Minute, time.Millisecond, 24*time.Hour),
	}
	var errs []error
	if raw := e.Required("WEBHOOK_SECRET", "set one or more comma-separated whsec_ secrets"); raw != "" {
		secrets, err := webhook.ParseSecrets(raw)
		if err != nil {
			// The parse error never contains the secret text, and neither
			// does this message.
			errs = append(errs, fmt.Errorf("invalid WEBHOOK_SECRET: %w", err))
		}
		c.Secrets = secrets
	}
	c.SMTPAddr = e.String("SMTP_ADDR", "")
	if c.SMTPAddr != "" && !validHostPort(c.SMTPAddr) {
		errs = append(errs, fmt.Errorf("invalid SMTP_ADDR=%q: want host:port, such as 127.0.0.1:1025, or empty to log emails instead", c.SMTPAddr))
	}
	if !event.ValidEmail(c.SMTPFrom) {
		errs = append(errs, fmt.Errorf("invalid SMTP_FROM=%q: want a bare email address, such as orders@example.com", c.SMTPFrom))
	}
	if c.EmailRetryMax < c.EmailRetryBase {
		errs = append(errs, fmt.Errorf("invalid EMAIL_RETRY_MAX=%s: must not be shorter than EMAIL_RETRY_BASE=%s", c.EmailRetryMax, c.EmailRetryBase))
	}
	if c.ProcessedTTL <= c.ClaimTTL() {
		errs = append(errs, fmt.Errorf("invalid PROCESSED_TTL=%s: must be longer than a claim, SMTP_TIMEOUT + 80s = %s", c.ProcessedTTL, c.ClaimTTL()))
	}
	return c, errors.Join(append([]error{e.Err()}, errs...)...)
}

// validHostPort reports whether s is host:port with a non-empty host and a
// port number a client can dial.
func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n <= 65535
}
