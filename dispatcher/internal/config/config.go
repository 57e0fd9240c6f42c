package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/ssrf"
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
	// DefaultConcurrency is sub_notifier's max_in_flight and the
	// redeliveries' in flight: the notifier answers in milliseconds, and
	// on a loaded machine more webhooks in flight let NATS and the
	// notifier batch their work; 32 made 4,067-4,252 emails/s end to end
	// on two cores where 64 made 4,737-4,742 (docs/BENCHMARKS.md).
	DefaultConcurrency = 64

	DefaultBreakerFailures   = 10
	DefaultBreakerCooloff    = 30 * time.Second
	DefaultBreakerCooloffMax = time.Hour
	DefaultDisableAfter      = 5 * 24 * time.Hour
	DefaultAttemptLogMaxAge  = 30 * 24 * time.Hour
)

// MinAdminTokenLen is the shortest ADMIN_TOKEN accepted: 32 characters
// hold 128 bits as hex (openssl rand -hex 16), beyond any guessing over
// HTTP, while anything shorter is most likely a password someone chose.
const MinAdminTokenLen = 32

// maxAdminTokenLen keeps the token well inside an HTTP header.
const maxAdminTokenLen = 1024

// Sensitive is a credential's text. It prints as xxxxx, so that a Config
// printed with %v or %+v shows none; use string(s) where the text is
// needed.
type Sensitive string

func (Sensitive) String() string   { return "xxxxx" }
func (Sensitive) GoString() string { return "xxxxx" }

// Key is the 32-byte AES-256 key of SECRETS_KEY, printed as xxxxx.
type Key [32]byte

func (Key) String() string   { return "xxxxx" }
func (Key) GoString() string { return "xxxxx" }

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

	// SecretTexts are the WEBHOOK_SECRET entries as given, for the
	// subscription sub_notifier, which keeps them encrypted in KV.
	SecretTexts []Sensitive
	// AdminToken authenticates every admin API request (ADMIN_TOKEN).
	AdminToken Sensitive
	// SecretsKey encrypts the subscriptions' secrets at rest (SECRETS_KEY).
	SecretsKey Key
	// AllowedNetworks are the private ranges webhooks may reach anyway
	// (ALLOWED_NETWORKS); empty means public addresses only.
	AllowedNetworks []netip.Prefix
	// BreakerFailures is how many failures in a row open a subscription's
	// circuit breaker (BREAKER_FAILURES).
	BreakerFailures int
	// DisableAfter disables a subscription that had no success for this
	// long (DISABLE_AFTER).
	DisableAfter time.Duration
	// BreakerCooloff is the first pause of an open circuit breaker, and
	// BreakerCooloffMax the longest, each failed probe doubling the last
	// (BREAKER_COOLOFF, BREAKER_COOLOFF_MAX).
	BreakerCooloff, BreakerCooloffMax time.Duration
	// AttemptLogMaxAge is how long the attempt log keeps an attempt
	// (ATTEMPT_LOG_MAX_AGE).
	AttemptLogMaxAge time.Duration
}

// Load reads the configuration through getenv and reports every bad
// variable at once, one error each, naming the variable. The webhook secret
// never appears in an error.
func Load(getenv func(string) string) (Config, error) {
	e := sharedconfig.New(getenv)
	cfg := Config{
		Common: e.LoadCommon(),
		Addr:   e.Addr("DISPATCHER_ADDR", DefaultAddr),
	}
	// The URL gets an Env of its own: the SSRF check below runs only on a
	// URL that parsed, whatever else is wrong.
	hook := sharedconfig.New(getenv)
	cfg.WebhookURL = hook.URL("NOTIFICATION_WEBHOOK_URL", DefaultWebhookURL, "http", "https")

	var secretErr error
	if raw := e.Required("WEBHOOK_SECRET", "set one or more whsec_ secrets, comma-separated"); raw != "" {
		secrets, err := webhook.ParseSecrets(raw)
		if err != nil {
			// The parse error describes the problem without the secret
			// text, so it is safe to show.
			secretErr = fmt.Errorf("invalid WEBHOOK_SECRET: %w", err)
		}
		cfg.Secrets = secrets
		for part := range strings.SplitSeq(raw, ",") {
			cfg.SecretTexts = append(cfg.SecretTexts, Sensitive(strings.TrimSpace(part)))
		}
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
	cfg.BreakerFailures = rest.Int("BREAKER_FAILURES", DefaultBreakerFailures, 1, 1000)
	cfg.DisableAfter = rest.Duration("DISABLE_AFTER", DefaultDisableAfter, time.Second, 90*24*time.Hour)
	cfg.BreakerCooloff = rest.Duration("BREAKER_COOLOFF", DefaultBreakerCooloff, 100*time.Millisecond, 24*time.Hour)
	cfg.BreakerCooloffMax = rest.Duration("BREAKER_COOLOFF_MAX", DefaultBreakerCooloffMax, 100*time.Millisecond, 7*24*time.Hour)
	cfg.AttemptLogMaxAge = rest.Duration("ATTEMPT_LOG_MAX_AGE", DefaultAttemptLogMaxAge, time.Minute, 365*24*time.Hour)
	if rest.Err() == nil && cfg.BreakerCooloffMax < cfg.BreakerCooloff {
		orderErr = errors.Join(orderErr, fmt.Errorf("invalid BREAKER_COOLOFF_MAX=%s: must be at least BREAKER_COOLOFF (%s)", cfg.BreakerCooloffMax, cfg.BreakerCooloff))
	}
	// MAX_DELIVER counts the attempts in the attempt log: an attempt's
	// record must outlive the wait for the next one, or the count starts
	// over and the retries never end.
	// A breaker's pause, too, lies between two attempts.
	if rest.Err() == nil && retry.Err() == nil && cfg.AttemptLogMaxAge < 2*max(cfg.RetryMax, cfg.BreakerCooloffMax) {
		orderErr = errors.Join(orderErr, fmt.Errorf("invalid ATTEMPT_LOG_MAX_AGE=%s: must be at least twice RETRY_MAX (%s) and BREAKER_COOLOFF_MAX (%s), since MAX_DELIVER counts the attempts it keeps",
			cfg.AttemptLogMaxAge, cfg.RetryMax, cfg.BreakerCooloffMax))
	}

	var adminErrs []error
	cfg.AdminToken, adminErrs = adminToken(getenv)
	key, keyErr := secretsKey(getenv)
	cfg.SecretsKey = key
	nets, netsErr := allowedNetworks(getenv)
	cfg.AllowedNetworks = nets
	var urlErr error
	if netsErr == nil && hook.Err() == nil {
		urlErr = checkWebhookURL(cfg.WebhookURL, nets)
	}

	if err := errors.Join(e.Err(), hook.Err(), secretErr, retry.Err(), orderErr, rest.Err(), timingErr, errors.Join(adminErrs...), keyErr, netsErr, urlErr); err != nil {
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

// adminToken reads ADMIN_TOKEN. Its errors never show the token, not even
// its length.
func adminToken(getenv func(string) string) (Sensitive, []error) {
	raw := strings.TrimSpace(getenv("ADMIN_TOKEN"))
	hint := fmt.Sprintf("at least %d visible ASCII characters, such as the output of `openssl rand -hex 32`", MinAdminTokenLen)
	switch {
	case raw == "":
		return "", []error{errors.New("missing ADMIN_TOKEN: set " + hint + "; every admin API request must send it as a Bearer token")}
	case len(raw) < MinAdminTokenLen || len(raw) > maxAdminTokenLen:
		return "", []error{fmt.Errorf("invalid ADMIN_TOKEN: want %s (at most %d)", hint, maxAdminTokenLen)}
	case strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "", []error{errors.New("invalid ADMIN_TOKEN: want " + hint + "; it travels in an HTTP header, so no spaces or other characters")}
	}
	return Sensitive(raw), nil
}

// secretsKey reads SECRETS_KEY: 32 bytes in standard base64. Its errors
// never show the value.
func secretsKey(getenv func(string) string) (Key, error) {
	const hint = "32 random bytes in standard base64 (44 characters), such as the output of `openssl rand -base64 32`"
	raw := strings.TrimSpace(getenv("SECRETS_KEY"))
	if raw == "" {
		return Key{}, errors.New("missing SECRETS_KEY: set " + hint + "; it encrypts the subscriptions' secrets at rest")
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(b) != len(Key{}) {
		return Key{}, errors.New("invalid SECRETS_KEY: want " + hint)
	}
	return Key(b), nil
}

// allowedNetworks reads ALLOWED_NETWORKS, a comma-separated CIDR list.
func allowedNetworks(getenv func(string) string) ([]netip.Prefix, error) {
	raw := strings.TrimSpace(getenv("ALLOWED_NETWORKS"))
	if raw == "" {
		return nil, nil
	}
	var nets []netip.Prefix
	for part := range strings.SplitSeq(raw, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("invalid ALLOWED_NETWORKS=%q: want comma-separated CIDR ranges such as 127.0.0.0/8,10.0.0.0/8,fd00::/8; %q is not one", raw, strings.TrimSpace(part))
		}
		nets = append(nets, p.Masked())
	}
	return nets, nil
}

// checkWebhookURL refuses at start a NOTIFICATION_WEBHOOK_URL whose literal
// address the SSRF guard would refuse at every delivery.
func checkWebhookURL(raw string, nets []netip.Prefix) error {
	err := ssrf.New(nets).CheckURL(raw)
	if err == nil {
		return nil
	}
	shown := sharedconfig.RedactURL(raw)
	if _, ok := ssrf.Refused(err); ok {
		return fmt.Errorf("invalid NOTIFICATION_WEBHOOK_URL=%q: %v; add its range to ALLOWED_NETWORKS", shown, err)
	}
	return fmt.Errorf("invalid NOTIFICATION_WEBHOOK_URL=%q: %v", shown, err)
}
