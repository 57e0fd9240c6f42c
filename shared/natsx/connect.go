package natsx

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jethook/jethook/shared/config"
)

// Reconnect timing: a short wait between rounds over the server list, with
// jitter so that many clients do not come back in step. TLS handshakes cost
// the server more, so TLS clients spread wider, as nats.go does by default.
const (
	reconnectWait      = 250 * time.Millisecond
	reconnectJitter    = 250 * time.Millisecond
	reconnectJitterTLS = time.Second
)

// Connect connects to the servers of cfg as name, with the credentials and
// TLS settings of cfg, and keeps reconnecting forever, also when the first
// attempt fails, so a service can start before NATS and survive a NATS
// restart without being restarted itself. Each new reason why it cannot
// connect (refused, a TLS failure) is logged once.
//
// The one failure it does not outlast is a refusal of the credentials: by
// nats.go's default, a server that refuses the same credentials twice in a
// row ends the reconnecting, since trying them forever would only hide the
// mistake. The connection is then closed, and lost receives why, once, as
// an error naming the variables to check; it receives likewise whenever the
// connection closes for good without Close or Drain. A service stops on it.
//
// Passwords and tokens never appear in what Connect logs or returns.
func Connect(cfg config.NATS, name string, logger *slog.Logger) (nc *nats.Conn, lost <-chan error, err error) {
	auth, err := authOptions(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", config.RedactURL(cfg.NATSURL), redact(err, cfg))
	}
	var current atomic.Pointer[nats.Conn]
	watch := &connectWatch{logger: logger, cfg: cfg}
	jitter := reconnectJitter
	if usesTLS(cfg) {
		jitter = reconnectJitterTLS
	}
	lostCh := make(chan error, 1)
	opts := append(auth,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.Timeout(2*time.Second),
		// The delay callback runs after each round over the server list:
		// the one place where the client can see why the round failed,
		// since nats.go reports a failed TLS or protocol handshake on a
		// reconnect through no callback.
		nats.CustomReconnectDelay(func(int) time.Duration {
			if c := current.Load(); c != nil {
				watch.note(c.LastError())
			}
			return reconnectWait + rand.N(jitter)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { watch.note(err) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			watch.reset()
			logger.Info("nats reconnected", "url", config.RedactURL(c.ConnectedUrl()))
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			watch.reset()
			logger.Info("nats connected", "url", config.RedactURL(c.ConnectedUrl()))
		}),
		nats.ClosedHandler(func(c *nats.Conn) {
			// Drain, with which a service stops, replaces this handler,
			// and Close normally leaves no error behind. What else closes
			// the connection does, and the connection will not come back.
			if err := c.LastError(); err != nil {
				select {
				case lostCh <- closedFor(cfg, err):
				default:
				}
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Error("nats async error", "error", err, "subject", subject)
		}),
	)
	url := cfg.NATSURL
	if url == "" {
		url = config.DefaultNATSURL
	}
	nc, err = nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", config.RedactURL(url), redact(err, cfg))
	}
	current.Store(nc)
	return nc, lostCh, nil
}

// authOptions turns cfg's credentials and TLS files into client options.
// The files are read again at each connection (the .creds file and the
// seed for every handshake), so renewed credentials need no restart.
func authOptions(cfg config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case cfg.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	case cfg.NATSNKey != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	case cfg.NATSUser != "":
		opts = append(opts, nats.UserInfo(cfg.NATSUser, string(cfg.NATSPassword)))
	}
	if cfg.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
	}
	if cfg.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
	}
	return opts, nil
}

// usesTLS says whether the client will speak TLS: a TLS file is set, or a
// URL asks for it.
func usesTLS(cfg config.NATS) bool {
	return cfg.NATSTLSCA != "" || cfg.NATSTLSCert != "" ||
		strings.Contains(cfg.NATSURL, "tls://") || strings.Contains(cfg.NATSURL, "wss://")
}

// closedFor explains why the connection closed for good. A refusal of the
// credentials names the variables that hold them, or says that none is set.
func closedFor(cfg config.NATS, err error) error {
	servers := config.RedactURL(cfg.NATSURL)
	if !isAuthError(err) {
		return fmt.Errorf("NATS connection to %s closed for good: %w", servers, redact(err, cfg))
	}
	hint := "no credentials are set: set NATS_CREDS, NATS_NKEY or NATS_USER/NATS_PASSWORD"
	if auth := cfg.Auth(); auth != "" {
		hint = "check " + auth
	}
	return fmt.Errorf("NATS at %s refused the connection: %w; %s", servers, redact(err, cfg), hint)
}

// isAuthError reports a refusal of the client's credentials.
func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// redact returns err with each URL of cfg, wherever its text contains it,
// shown with its password or token masked; errors.Is and As still see err.
// nats.go echoes a URL that does not parse, password included.
func redact(err error, cfg config.NATS) error {
	text := err.Error()
	for _, raw := range strings.Split(cfg.NATSURL, ",") {
		if raw = strings.TrimSpace(raw); raw != "" {
			text = strings.ReplaceAll(text, raw, config.RedactURL(raw))
		}
	}
	if text == err.Error() {
		return err
	}
	return &redactedError{err: err, text: text}
}

type redactedError struct {
	err  error
	text string
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }

// connectWatch logs why the client cannot connect, once per reason until it
// connects, so that an unreachable server or a TLS mistake shows in the
// log without a line per attempt.
type connectWatch struct {
	logger *slog.Logger
	cfg    config.NATS

	mu   sync.Mutex
	last string
}

func (w *connectWatch) note(err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err.Error() == w.last {
		return
	}
	w.last = err.Error()
	w.logger.Warn("cannot connect to NATS yet, retrying", "servers", config.RedactURL(w.cfg.NATSURL), "error", redact(err, w.cfg).Error())
}

func (w *connectWatch) reset() {
	w.mu.Lock()
	w.last = ""
	w.mu.Unlock()
}
