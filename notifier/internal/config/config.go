package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/service"
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
	// SMTPTimeout bounds the connection and each SMTP command but the
	// final ".".
	SMTPTimeout time.Duration
	// SMTPDataTimeout is how long the answer to the final "." of a
	// message is waited for: RFC 5321 (4.5.3.2.6) asks for 10 minutes,
	// since the relay may be relaying synchronously, and giving up early
	// sends the email twice.
	SMTPDataTimeout time.Duration
	// EmailConcurrency is how many emails are in flight to the relay at
	// once, over as many reused SMTP connections at most. The worker
	// handles EmailWorkers messages at once.
	EmailConcurrency int
	// EmailMaxAttempts is how many deliveries an email gets before a
	// temporary failure (4xx, network) dead-letters it.
	EmailMaxAttempts int
	// SMTPUsername and SMTPPassword authenticate with the relay (AUTH
	// PLAIN or LOGIN); the password is only ever sent encrypted.
	SMTPUsername string
	SMTPPassword config.Secret
	// SMTPTLS is how the connection to the relay is encrypted: starttls,
	// implicit, opportunistic or none.
	SMTPTLS string
	// SMTPTLSCA, when set, verifies the relay with this CA bundle instead
	// of the system's roots.
	SMTPTLSCA *x509.CertPool
	// ProcessedTTL is how long an event id is remembered as processed. It
	// must outlast the dispatcher's longest retry span, or a late retry of
	// an old webhook would send the email again.
	ProcessedTTL time.Duration
	// EmailRetryBase and EmailRetryMax bound the exponential delay before a
	// failed email is tried again.
	EmailRetryBase time.Duration
	EmailRetryMax  time.Duration
}

// Fixed parts of the email timings.
const (
	// ackWait is the email consumer's AckWait. The worker's heartbeat
	// keeps a live send's message from being redelivered however long it
	// takes, so AckWait only says how soon the message of a notifier that
	// died goes to another worker.
	ackWait = 30 * time.Second
	// smtpCommands is how many SMTP timeouts one email may take besides
	// the final dot: connect and greeting, EHLO, STARTTLS, AUTH, RSET,
	// MAIL, RCPT and DATA with the message.
	smtpCommands = 8
	// storeMargin covers the idempotency store's round trips around a send.
	storeMargin = 10 * time.Second
	// shutdownGrace is how long in-flight emails may go on at shutdown.
	shutdownGrace = 4 * time.Second
	// workersPerSend is how many messages the email worker handles for
	// each email in flight to the relay. The others decode, claim, record
	// and settle theirs meanwhile, so that a connection the relay has
	// answered is taken by a message that is ready at once instead of
	// waiting for a fetch and a claim: each email has three NATS round
	// trips around its send, and on a loaded machine those cost as much
	// as the send. More of them at once also lets NATS batch them, which
	// costs less CPU per email (docs/BENCHMARKS.md).
	workersPerSend = 4
)

// EmailWorkers is how many email messages are handled at once:
// workersPerSend for each email that may be in flight to the relay. Only
// EmailConcurrency of them are sent at a time; the rest wait for a
// connection while holding their claim.
func (c Config) EmailWorkers() int { return workersPerSend * c.EmailConcurrency }

// Timings are the email consumer's clocks, all derived here: a fixed
// AckWait with a heartbeat at a quarter of it, and a message timeout that
// covers every SMTP command, the wait for the final dot and the store, for
// the email itself and for the sends it may wait behind: a connection is
// free for it after at most workersPerSend-1 other emails.
func (c Config) Timings() consume.Timings {
	return consume.Timings{
		AckWait:        ackWait,
		Heartbeat:      ackWait / 4,
		MessageTimeout: workersPerSend*(c.SMTPDataTimeout+smtpCommands*c.SMTPTimeout) + storeMargin,
		SettleTimeout:  3 * time.Second,
		ShutdownGrace:  shutdownGrace,
	}
}

// ClaimLease is how long a worker's claim on an event id lives unless the
// worker renews it, which it does while it prepares the email. A worker
// that died leaves a claim that lapses within this time, so its message
// can be claimed again when it is redelivered after AckWait.
func (c Config) ClaimLease() time.Duration { return ackWait }

// CommitLease is the claim's lease from the moment the final "." is sent:
// the relay owns the message from then on, and the claim must outlive the
// longest wait for its answer, or another worker would send it again
// while this one still waits.
func (c Config) CommitLease() time.Duration { return c.SMTPDataTimeout + time.Minute }

// Load reads the configuration through getenv, reporting every bad
// variable by name.
func Load(getenv func(string) string) (Config, error) {
	e := config.New(getenv)
	c := Config{
		Common:           e.LoadCommon(),
		Addr:             e.Addr("NOTIFIER_ADDR", "127.0.0.1:8081"),
		SMTPFrom:         e.String("SMTP_FROM", "orders@example.com"),
		SMTPTimeout:      e.Duration("SMTP_TIMEOUT", 10*time.Second, time.Second, 5*time.Minute),
		SMTPDataTimeout:  e.Duration("SMTP_DATA_TIMEOUT", 10*time.Minute, time.Second, 30*time.Minute),
		EmailConcurrency: e.Int("EMAIL_CONCURRENCY", 16, 1, 256),
		EmailMaxAttempts: e.Int("EMAIL_MAX_ATTEMPTS", 30, 1, 1000),
		ProcessedTTL:     e.Duration("PROCESSED_TTL", 72*time.Hour, time.Minute, 8760*time.Hour),
		EmailRetryBase:   e.Duration("EMAIL_RETRY_BASE", time.Second, time.Millisecond, time.Hour),
		EmailRetryMax:    e.Duration("EMAIL_RETRY_MAX", 5*time.Minute, time.Millisecond, 24*time.Hour),
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
	errs = append(errs, c.loadSMTPSecurity(e, getenv)...)
	if !event.ValidEmail(c.SMTPFrom) {
		errs = append(errs, fmt.Errorf("invalid SMTP_FROM=%q: want a bare email address, such as orders@example.com", c.SMTPFrom))
	}
	if c.EmailRetryMax < c.EmailRetryBase {
		errs = append(errs, fmt.Errorf("invalid EMAIL_RETRY_MAX=%s: must not be shorter than EMAIL_RETRY_BASE=%s", c.EmailRetryMax, c.EmailRetryBase))
	}
	if c.ProcessedTTL <= c.CommitLease() {
		errs = append(errs, fmt.Errorf("invalid PROCESSED_TTL=%s: must be longer than a claim's lease after the final dot, SMTP_DATA_TIMEOUT + 1m = %s", c.ProcessedTTL, c.CommitLease()))
	}
	if e.Err() == nil {
		if err := c.Timings().Validate(service.WorkBudget); err != nil {
			errs = append(errs, fmt.Errorf("invalid SMTP_TIMEOUT=%s or SMTP_DATA_TIMEOUT=%s: the email timings derived from them do not fit: %w", c.SMTPTimeout, c.SMTPDataTimeout, err))
		}
	}
	return c, errors.Join(append([]error{e.Err()}, errs...)...)
}

// loadSMTPSecurity reads SMTP_TLS, SMTP_TLS_CA, SMTP_USERNAME and
// SMTP_PASSWORD. Without SMTP_TLS, a relay on a loopback address is
// reached with opportunistic STARTTLS (a local catcher seldom has a
// certificate) and any other relay with STARTTLS required. A password is
// never sent over a connection that is not encrypted: a setting that
// would do so stops the service at start. The password is never shown.
func (c *Config) loadSMTPSecurity(e *config.Env, getenv func(string) string) []error {
	var errs []error
	def := "starttls"
	if host, _, err := net.SplitHostPort(c.SMTPAddr); err == nil && isLoopback(host) {
		def = "opportunistic"
	}
	c.SMTPTLS = e.OneOf("SMTP_TLS", def, "starttls", "implicit", "opportunistic", "none")
	c.SMTPUsername = e.String("SMTP_USERNAME", "")
	c.SMTPPassword = config.Secret(getenv("SMTP_PASSWORD"))
	switch {
	case (c.SMTPUsername == "") != (c.SMTPPassword == ""):
		errs = append(errs, errors.New("invalid SMTP_USERNAME/SMTP_PASSWORD: set both to authenticate, or neither"))
	case c.SMTPPassword != "" && (c.SMTPTLS == "none" || c.SMTPTLS == "opportunistic"):
		errs = append(errs, fmt.Errorf("invalid SMTP_TLS=%s: SMTP_PASSWORD is set, and a password is never sent over a connection that may not be encrypted; use starttls or implicit", c.SMTPTLS))
	}
	if path := e.String("SMTP_TLS_CA", ""); path != "" {
		pem, err := os.ReadFile(path)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("invalid SMTP_TLS_CA=%q: %w", path, err))
		case !pool.AppendCertsFromPEM(pem):
			errs = append(errs, fmt.Errorf("invalid SMTP_TLS_CA=%q: no PEM certificate in it", path))
		default:
			c.SMTPTLSCA = pool
		}
	}
	return errs
}

// isLoopback reports whether host is a loopback address or localhost.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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
