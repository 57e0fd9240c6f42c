// Package smtptest runs a real SMTP server on 127.0.0.1 for tests and for
// the chaos harness: it records every message it accepts and can be told to
// refuse, to stall without answering, to answer slowly or to hold new
// messages back, for a while.
package smtptest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/mail"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one accepted email.
type Message struct {
	From     string
	To       []string
	Header   mail.Header
	Body     string
	Data     []byte // the message as transmitted
	Received time.Time
	// TLS says the message came over an encrypted connection.
	TLS bool
}

// Server is an in-process SMTP server.
type Server struct {
	Addr string

	srv *smtp.Server

	mu       sync.Mutex
	messages []Message
	refuse   int // how many more messages to refuse with 451
	refused  int
	attempts int
	onData   func(attempt int)
	// latency is how long the server takes to answer the final "." of
	// DATA, as a relay that scans or relays synchronously does.
	latency time.Duration
	// rejectRcpt, when set, refuses a recipient for good (550) when it
	// returns true; rejected counts those refusals.
	rejectRcpt func(addr string) bool
	rejected   int
	sessions   int
	conns      []*smtp.Conn
	// inFlight and peak count messages between the end of DATA and the
	// server's answer, to show how many a client sends at once.
	inFlight, peak int
	opts           options
	// authFailures counts refused AUTH attempts.
	authFailures int
	// stall, while not nil, holds every message at the end of DATA until
	// it is closed; closed ends the holding for good when the server stops.
	stall  chan struct{}
	closed chan struct{}
	// hold, while not nil, keeps every new transaction waiting at MAIL
	// FROM until it is closed; held counts the transactions waiting there.
	hold chan struct{}
	held int
	// open counts the transactions that passed MAIL FROM and have been
	// neither answered at their final "." nor abandoned.
	open int
}

// Option configures a server: TLS, and who may send.
type Option func(*options)

type options struct {
	startTLS, implicitTLS *tls.Config
	user, password        string
	mechanisms            []string
}

// WithStartTLS offers STARTTLS with cfg, as most relays on port 587 do.
func WithStartTLS(cfg *tls.Config) Option { return func(o *options) { o.startTLS = cfg } }

// WithImplicitTLS speaks TLS with cfg from the first byte, as relays on
// port 465 do.
func WithImplicitTLS(cfg *tls.Config) Option { return func(o *options) { o.implicitTLS = cfg } }

// WithAuth requires AUTH as user with password before MAIL, offering the
// mechanisms given (PLAIN, LOGIN; PLAIN when none is given), over TLS only
// when TLS is configured.
func WithAuth(user, password string, mechanisms ...string) Option {
	return func(o *options) {
		o.user, o.password, o.mechanisms = user, password, mechanisms
		if len(o.mechanisms) == 0 {
			o.mechanisms = []string{sasl.Plain}
		}
	}
}

// Start listens on a random 127.0.0.1 port and stops when the test ends.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := Listen("127.0.0.1:0", opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Listen starts a server on addr (host:port; port 0 picks a free one) that
// runs until Close.
func Listen(addr string, opts ...Option) (*Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtptest: listen on %s: %w", addr, err)
	}
	if o.implicitTLS != nil {
		ln = tls.NewListener(ln, o.implicitTLS)
	}
	s := &Server{Addr: ln.Addr().String(), closed: make(chan struct{}), opts: o}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.sessions++
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		if o.user != "" {
			return &authSession{session: session{s: s, conn: c}}, nil
		}
		return &session{s: s, conn: c}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.TLSConfig = o.startTLS
	// AUTH in the clear only where the server has no TLS to offer.
	s.srv.AllowInsecureAuth = o.startTLS == nil && o.implicitTLS == nil
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.MaxMessageBytes = 1 << 20
	s.srv.MaxRecipients = 10
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server and releases the messages held by a stall, which
// are then refused.
func (s *Server) Close() error {
	s.mu.Lock()
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	s.mu.Unlock()
	return s.srv.Close()
}

// Stall makes the server, while on is true, hold every message at the end
// of DATA without answering, as a mail relay that hangs does: the client
// times out and the message is not accepted. Turning it off refuses the
// held messages with 451, whose clients have given up by then, and lets
// new messages through.
func (s *Server) Stall(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.stall == nil:
		s.stall = make(chan struct{})
	case !on && s.stall != nil:
		close(s.stall)
		s.stall = nil
	}
}

// Refuse makes the server answer the next n messages with a temporary
// failure (451), as a mail relay under load does.
func (s *Server) Refuse(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = n
}

// Refused returns how many messages were refused so far.
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// OnData sets a function called at the end of every DATA, before the
// server answers, with the number of the attempt (1, 2, ...).
func (s *Server) OnData(f func(attempt int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onData = f
}

// Attempts is the number of messages transmitted so far, refused or not.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// SetLatency makes the server wait d before it answers the final "." of
// each message, as a slow relay does; the message is accepted after the
// wait, unless the server stops first.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// RejectRecipients makes the server refuse, with a permanent 550 at RCPT
// TO, every recipient for which reject returns true, as a suppression list
// or a sandbox does; nil accepts every recipient again.
func (s *Server) RejectRecipients(reject func(addr string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectRcpt = reject
}

// Rejected returns how many recipients were refused with 550 so far.
func (s *Server) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

// Sessions returns how many SMTP connections the server has accepted, so
// that a test can tell a client that reuses its connections from one that
// dials per message.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Peak returns the most messages the server held at once between the end
// of their DATA and its answer.
func (s *Server) Peak() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// DisconnectAll closes every client connection, as a relay that drops its
// idle clients does; the server goes on accepting new ones.
func (s *Server) DisconnectAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// InFlight returns how many messages the server holds between the end of
// their DATA and its answer right now. Once it has been seen at 0 after
// SetLatency(0), no message is still waiting out the earlier latency.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Hold makes the server, while on is true, keep every new transaction
// waiting at MAIL FROM without answering, as a relay slow to accept does:
// its client has not sent the message yet. Turning it off lets them go on.
// Together with Open, it lets a test bring every client to a point where
// none waits for the answer to a message it sent.
func (s *Server) Hold(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.hold == nil:
		s.hold = make(chan struct{})
	case !on && s.hold != nil:
		close(s.hold)
		s.hold = nil
	}
}

// Held returns how many transactions wait at MAIL FROM because of Hold.
func (s *Server) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// Open returns how many transactions have passed MAIL FROM and been
// neither answered at their final "." nor abandoned (RSET, a new EHLO, a
// closed connection). While Hold is on, 0 means that no client waits for
// the answer to a message it sent, and none can start one.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Messages returns a copy of what was accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

type session struct {
	s      *Server
	conn   *smtp.Conn
	from   string
	to     []string
	authed bool
	// open is set while this session's transaction counts in Server.open.
	open bool
}

// authSession is a session of a server that requires AUTH.
type authSession struct{ session }

func (as *authSession) AuthMechanisms() []string { return as.s.opts.mechanisms }

func (as *authSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, password string) error {
		if user != as.s.opts.user || password != as.s.opts.password {
			as.s.mu.Lock()
			as.s.authFailures++
			as.s.mu.Unlock()
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication credentials invalid"}
		}
		as.authed = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, password string) error { return check(user, password) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (as *authSession) Mail(from string, opts *smtp.MailOptions) error {
	if !as.authed {
		return smtp.ErrAuthRequired
	}
	return as.session.Mail(from, opts)
}

// loginServer is the server side of AUTH LOGIN, which go-sasl leaves out:
// it asks for the user name, then the password.
type loginServer struct {
	check func(user, password string) error
	step  int
	user  string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 { // an initial response is the user name
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(response))
}

// AuthFailures returns how many AUTH attempts the server refused.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFailures
}

// Reset ends the transaction: go-smtp calls it after answering DATA, on
// RSET and on a new EHLO.
func (ss *session) Reset() {
	ss.from, ss.to = "", nil
	ss.close()
}

func (ss *session) Logout() error {
	ss.close()
	return nil
}

func (ss *session) close() {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.open {
		ss.open = false
		s.open--
	}
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	s := ss.s
	s.mu.Lock()
	// The transaction opens under the same lock that reads hold, so that
	// one that slipped past a Hold just turned on counts in Open.
	for s.hold != nil {
		hold := s.hold
		s.held++
		s.mu.Unlock()
		var stopping bool
		select {
		case <-hold:
		case <-s.closed:
			stopping = true
		}
		s.mu.Lock()
		s.held--
		if stopping {
			s.mu.Unlock()
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "shutting down"}
		}
	}
	if !ss.open {
		ss.open = true
		s.open++
	}
	s.mu.Unlock()
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	s.mu.Lock()
	reject := s.rejectRcpt != nil && s.rejectRcpt(to)
	if reject {
		s.rejected++
	}
	s.mu.Unlock()
	if reject {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox unavailable: " + to}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.s
	s.mu.Lock()
	s.attempts++
	s.inFlight++
	s.peak = max(s.peak, s.inFlight)
	attempt, onData, stall, latency := s.attempts, s.onData, s.stall, s.latency
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	if onData != nil {
		onData(attempt)
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-s.closed:
			t.Stop()
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "shutting down"}
		}
	}
	if stall != nil {
		// A stalled message is never accepted: its client has given up
		// by the time the stall ends, and recording it would count an
		// email the sender believes failed.
		select {
		case <-stall:
		case <-s.closed:
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "stalled, try again later"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse > 0 {
		s.refuse--
		s.refused++
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	_, encrypted := ss.conn.TLSConnectionState()
	m := Message{From: ss.from, To: append([]string(nil), ss.to...), Data: raw, Received: time.Now(), TLS: encrypted}
	if parsed, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		m.Header = parsed.Header
		body, _ := io.ReadAll(parsed.Body)
		m.Body = string(body)
	}
	s.messages = append(s.messages, m)
	return nil
}
