package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/jethook/jethook/shared/consume"
)

var _ Sender = (*SMTPSender)(nil)

// SMTPConfig says how to reach the mail relay.
type SMTPConfig struct {
	// Addr is the relay as host:port.
	Addr string
	// From is the envelope sender and the From header.
	From string
	// CommandTimeout bounds the connection and each command but the
	// final ".".
	CommandTimeout time.Duration
	// DataTimeout bounds the wait for the answer to the final "."; RFC
	// 5321 asks for 10 minutes.
	DataTimeout time.Duration
	// MaxConns bounds the connections open to the relay, and so the
	// emails in flight.
	MaxConns int
	// TLS is how the connection is encrypted (TLSStartTLS, TLSImplicit,
	// TLSOpportunistic or TLSNone); TLSConfig verifies the relay (nil:
	// the system's roots and the relay's host name).
	TLS       string
	TLSConfig *tls.Config
	// Username and Password, when set, authenticate with AUTH PLAIN or
	// LOGIN, whichever the relay offers, and only over an encrypted
	// connection.
	Username, Password string
	// Now stamps the Date header; nil means time.Now.
	Now func() time.Time
}

// The TLS modes of SMTP_TLS.
const (
	// TLSStartTLS upgrades the connection with STARTTLS and refuses to go
	// on without it.
	TLSStartTLS = "starttls"
	// TLSImplicit speaks TLS from the first byte (port 465).
	TLSImplicit = "implicit"
	// TLSOpportunistic upgrades with STARTTLS when the relay offers it.
	TLSOpportunistic = "opportunistic"
	// TLSNone never encrypts.
	TLSNone = "none"
)

// errStopping ends an email that was waiting for a connection when the
// notifier began to stop; it goes to the next delivery.
var errStopping = errors.New("the notifier is stopping; the email is left to the next delivery")

// maxIdle is how long an unused connection is kept: relays drop idle
// clients after a while (RFC 5321 asks them to wait at least 5 minutes,
// many wait less), and a connection they dropped costs a failed MAIL.
const maxIdle = 30 * time.Second

// SMTPSender delivers messages to one SMTP relay over a bounded pool of
// reused connections.
//
// A message accepted (250 after its final dot) ends its mail transaction
// and leaves the connection as fresh as after EHLO (RFC 5321, 4.1.1.4), so
// the next message starts with MAIL at once. A refused command leaves the
// transaction open: that connection is reset (RSET) before its next
// message. go-smtp's RSET also makes the next message say EHLO again, which
// is why a clean connection gets neither: two of six round trips saved per
// email. Whether the relay still holds a pooled connection shows at MAIL,
// before any of the message is sent; when it does not (no reply, or 421),
// the message goes out on a new connection, in the same attempt. A
// connection that fails otherwise is closed.
type SMTPSender struct {
	cfg   SMTPConfig
	tls   *tls.Config
	slots chan struct{} // one per message in flight, at most MaxConns
	idle  chan *smtpConn
	// offersTLS caches whether the relay offered STARTTLS, in the
	// opportunistic mode: 0 unknown, 1 yes, 2 no.
	offersTLS atomic.Int32
}

// smtpConn is one connection to the relay.
type smtpConn struct {
	client *smtp.Client
	raw    net.Conn
	used   time.Time
	// open is set from MAIL until the relay answers the final dot: a
	// connection put back while it is set (a command was refused) is reset
	// with RSET before its next message.
	open bool
}

// NewSMTPSender returns a sender for cfg.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtp relay %q: %w", cfg.Addr, err)
	}
	cfg.MaxConns = max(cfg.MaxConns, 1)
	switch cfg.TLS {
	case "":
		cfg.TLS = TLSOpportunistic
	case TLSStartTLS, TLSImplicit, TLSOpportunistic, TLSNone:
	default:
		return nil, fmt.Errorf("smtp: unknown TLS mode %q", cfg.TLS)
	}
	if cfg.Password != "" && (cfg.TLS == TLSNone || cfg.TLS == TLSOpportunistic) {
		return nil, fmt.Errorf("smtp: a password is only sent over TLS: use TLS mode %s or %s, not %s", TLSStartTLS, TLSImplicit, cfg.TLS)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	return &SMTPSender{
		cfg:   cfg,
		tls:   tc,
		slots: make(chan struct{}, cfg.MaxConns),
		idle:  make(chan *smtpConn, cfg.MaxConns),
	}, nil
}

// Close closes the idle connections.
func (s *SMTPSender) Close() {
	for {
		select {
		case c := <-s.idle:
			c.quit()
		default:
			return
		}
	}
}

// Send delivers m over a pooled connection. It waits for a free one while
// MaxConns emails are in flight.
func (s *SMTPSender) Send(ctx context.Context, m Message, commit Commit) error {
	// An email that has no connection yet when the notifier begins to
	// stop is not started: the end of the shutdown grace could cut it off
	// after its final dot, and the next delivery would send it again.
	stopping := consume.Stopping(ctx)
	select {
	case <-stopping:
		return &SendError{Stage: StageConnect, Err: errStopping}
	default:
	}
	select {
	case s.slots <- struct{}{}:
	case <-stopping:
		return &SendError{Stage: StageConnect, Err: errStopping}
	case <-ctx.Done():
		return &SendError{Stage: StageConnect, Err: ctx.Err()}
	}
	defer func() { <-s.slots }()

	c, pooled, err := s.conn(ctx)
	if err != nil {
		return err
	}
	err = s.sendOn(ctx, c, m, commit)
	if pooled && gone(err) && ctx.Err() == nil {
		// The relay closed the idle connection; nothing of the message
		// was sent before its MAIL failed.
		if c, err = s.dial(ctx); err != nil {
			return err
		}
		err = s.sendOn(ctx, c, m, commit)
	}
	return err
}

// gone reports a MAIL that found the connection closed by the relay: no
// reply at all, or 421, the relay closing it. A MAIL that timed out is not
// one: the relay is slow, not gone, and a second connection would only
// wait again.
func gone(err error) bool {
	var se *SendError
	if !errors.As(err, &se) || se.Stage != StageMail {
		return false
	}
	var ne net.Error
	if se.Code == 0 && errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return se.Code == 0 || se.Code == 421
}

// sendOn sends m on c, and then returns c to the pool or closes it.
func (s *SMTPSender) sendOn(ctx context.Context, c *smtpConn, m Message, commit Commit) error {
	// go-smtp takes no context; pulling the deadline in makes a pending
	// read or write fail at once when the caller gives up, and the
	// connection is not reused after that.
	stop := context.AfterFunc(ctx, func() { _ = c.raw.SetDeadline(time.Now()) })
	reuse, err := s.transact(ctx, c, m, commit)
	if !stop() {
		reuse = false // the deadline was pulled in: the connection is spent
	}
	if reuse {
		c.used = time.Now()
		select {
		case s.idle <- c:
		default:
			c.quit()
		}
	} else {
		_ = c.client.Close()
	}
	return err
}

// transact sends m on c and reports whether c can carry another message:
// after a refusal it can, after a broken conversation it cannot.
func (s *SMTPSender) transact(ctx context.Context, c *smtpConn, m Message, commit Commit) (reuse bool, err error) {
	c.open = true // until the relay answers the final dot
	if err := c.client.Mail(s.cfg.From, nil); err != nil {
		return refused(StageMail, err)
	}
	if err := c.client.Rcpt(m.To, nil); err != nil {
		return refused(StageRcpt, err)
	}
	w, err := c.client.Data()
	if err != nil {
		return refused(StageData, err)
	}
	if _, err := w.Write(m.Render(s.cfg.From, s.now())); err != nil {
		return false, sendError(StageData, err)
	}
	if err := commit(ctx, s.cfg.DataTimeout); err != nil {
		// Without the final dot the relay discards what it got; closing
		// the connection is the only way to take DATA back.
		return false, &SendError{Stage: StageCommit, Err: err}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		se := sendError(StageDot, err)
		// A refusal of the message ends its transaction as an acceptance
		// does, and leaves the connection usable, except 421: the relay
		// is closing it.
		c.open = false
		return se.Code != 0 && se.Code != 421, se
	}
	c.open = false
	noteAccepted(ctx, resp)
	return true, nil
}

// refused classifies a failed command. A reply leaves the connection in a
// known state, which RSET at its next use resets, except 421: the relay is
// closing it.
func refused(stage string, err error) (bool, error) {
	se := sendError(stage, err)
	return se.Code != 0 && se.Code != 421, se
}

// conn returns a connection ready for a message: an idle one from the
// pool (pooled), reset if a refusal left its transaction open, or a new
// one.
func (s *SMTPSender) conn(ctx context.Context) (c *smtpConn, pooled bool, err error) {
	for {
		select {
		case c = <-s.idle:
		default:
			c, err = s.dial(ctx)
			return c, false, err
		}
		if time.Since(c.used) > maxIdle {
			c.quit()
			continue
		}
		if c.open {
			if err := c.client.Reset(); err != nil {
				_ = c.client.Close()
				continue
			}
			c.open = false
		}
		return c, true, nil
	}
}

// dial opens a connection, reads the greeting, says EHLO, encrypts it as
// the TLS mode asks and authenticates.
func (s *SMTPSender) dial(ctx context.Context) (*smtpConn, error) {
	client, raw, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	defer stop()
	if err := s.auth(client); err != nil {
		_ = client.Close()
		return nil, err
	}
	if ctx.Err() != nil {
		_ = client.Close()
		return nil, &SendError{Stage: StageConnect, Err: ctx.Err()}
	}
	return &smtpConn{client: client, raw: raw, used: time.Now()}, nil
}

// open connects as the TLS mode asks. In the opportunistic mode, the first
// connection finds out whether the relay offers STARTTLS; if it does, that
// connection is replaced by one that upgrades, and so are all later ones.
func (s *SMTPSender) open(ctx context.Context) (*smtp.Client, net.Conn, error) {
	d := net.Dialer{Timeout: s.cfg.CommandTimeout}
	raw, err := d.DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return nil, nil, &SendError{Stage: StageConnect, Err: err}
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	defer stop()
	mode := s.cfg.TLS
	if mode == TLSOpportunistic {
		switch s.offersTLS.Load() {
		case 1:
			mode = TLSStartTLS
		case 2:
			mode = TLSNone
		}
	}
	var client *smtp.Client
	switch mode {
	case TLSImplicit:
		tc := tls.Client(raw, s.tls)
		hctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = raw.Close()
			return nil, nil, &SendError{Stage: StageConnect, Err: fmt.Errorf("TLS handshake: %w", err)}
		}
		client = s.client(tc)
	case TLSStartTLS:
		client, err = newClientStartTLS(s, raw)
		if err != nil {
			_ = raw.Close()
			return nil, nil, sendError(StageConnect, fmt.Errorf("STARTTLS, which SMTP_TLS=%s requires: %w", s.cfg.TLS, err))
		}
	default: // none, or opportunistic not yet known
		client = s.client(raw)
		if err := client.Hello("localhost"); err != nil {
			_ = client.Close()
			return nil, nil, sendError(StageConnect, err)
		}
		if mode == TLSOpportunistic {
			ok, _ := client.Extension("STARTTLS")
			if !ok {
				s.offersTLS.Store(2)
				return client, raw, nil
			}
			s.offersTLS.Store(1)
			_ = client.Close()
			return s.open(ctx)
		}
	}
	return client, raw, nil
}

func (s *SMTPSender) client(conn net.Conn) *smtp.Client {
	c := smtp.NewClient(conn)
	c.CommandTimeout = s.cfg.CommandTimeout
	c.SubmissionTimeout = s.cfg.DataTimeout
	return c
}

func newClientStartTLS(s *SMTPSender, raw net.Conn) (*smtp.Client, error) {
	c, err := smtp.NewClientStartTLS(raw, s.tls)
	if err != nil {
		return nil, err
	}
	c.CommandTimeout = s.cfg.CommandTimeout
	c.SubmissionTimeout = s.cfg.DataTimeout
	return c, nil
}

// auth authenticates with AUTH PLAIN or LOGIN when a username is set, and
// never over a connection that is not encrypted.
func (s *SMTPSender) auth(c *smtp.Client) error {
	if s.cfg.Username == "" {
		return nil
	}
	if _, ok := c.TLSConnectionState(); !ok {
		return &SendError{Stage: StageConnect, Err: errors.New("the connection is not encrypted; the password is not sent")}
	}
	var mech sasl.Client
	switch {
	case c.SupportsAuth(sasl.Plain):
		mech = sasl.NewPlainClient("", s.cfg.Username, s.cfg.Password)
	case c.SupportsAuth(sasl.Login):
		mech = sasl.NewLoginClient(s.cfg.Username, s.cfg.Password)
	default:
		return &SendError{Stage: StageConnect, Err: errors.New("the relay offers neither AUTH PLAIN nor AUTH LOGIN")}
	}
	if err := c.Auth(mech); err != nil {
		return sendError("AUTH", err)
	}
	return nil
}

func (s *SMTPSender) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// quit says goodbye on an idle connection, bounded by a short deadline.
func (c *smtpConn) quit() {
	_ = c.raw.SetDeadline(time.Now().Add(time.Second))
	if err := c.client.Quit(); err != nil {
		_ = c.client.Close()
	}
}
