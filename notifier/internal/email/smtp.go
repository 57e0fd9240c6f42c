package email

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"time"
)

var _ Sender = (*SMTPSender)(nil)

// SMTPSender delivers messages to one SMTP server, a relay that takes care
// of the rest of the way. It opens a connection per message: confirmation
// emails are rare enough that pooling is not worth its failure modes.
type SMTPSender struct {
	// Addr is the server as host:port.
	Addr string
	// From is the envelope sender and the From header.
	From string
	// Timeout bounds the whole conversation, dial included.
	Timeout time.Duration
	// Now stamps the Date header; nil means time.Now.
	Now func() time.Time
}

// Send delivers m. The message counts as sent once the server has accepted
// the DATA; a failure to say goodbye afterwards does not make it unsent.
func (s *SMTPSender) Send(ctx context.Context, m Message) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()

	dialer := net.Dialer{Timeout: s.Timeout}
	conn, err := dialer.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("smtp %s: dial: %w", s.Addr, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("smtp %s: set deadline: %w", s.Addr, err)
	}
	// net/smtp takes no context; pulling the deadline in makes every
	// pending read and write fail at once when the caller gives up.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("smtp %s: greeting: %w", s.Addr, err)
	}
	defer c.Close()
	// Encrypt whenever the server offers it, as smtp.SendMail does.
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("smtp %s: STARTTLS: %w", s.Addr, err)
		}
	}
	if err := c.Mail(s.From); err != nil {
		return fmt.Errorf("smtp %s: MAIL FROM: %w", s.Addr, err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return fmt.Errorf("smtp %s: RCPT TO: %w", s.Addr, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", s.Addr, err)
	}
	if _, err := w.Write(m.Render(s.From, now())); err != nil {
		return fmt.Errorf("smtp %s: write message: %w", s.Addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: message refused: %w", s.Addr, err)
	}
	// The server has taken responsibility for the message.
	_ = c.Quit()
	return nil
}
