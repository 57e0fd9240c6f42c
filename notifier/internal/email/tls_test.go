package email

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/testkit"
)

// TestTLSModes: each SMTP_TLS mode against relays that offer STARTTLS,
// speak TLS from the first byte, or offer nothing, with a throwaway CA
// the sender is told to trust.
func TestTLSModes(t *testing.T) {
	ca := testkit.NewCA(t)
	serverTLS := ca.ServerTLS(t)
	trust := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	startTLS := smtptest.Start(t, smtptest.WithStartTLS(serverTLS))
	implicit := smtptest.Start(t, smtptest.WithImplicitTLS(serverTLS))
	plain := smtptest.Start(t)
	tests := []struct {
		name      string
		relay     *smtptest.Server
		mode      string
		encrypted bool
		fails     string
	}{
		{"starttls offered", startTLS, TLSStartTLS, true, ""},
		{"starttls required, not offered", plain, TLSStartTLS, false, "STARTTLS"},
		{"implicit", implicit, TLSImplicit, true, ""},
		{"implicit against a plain relay", plain, TLSImplicit, false, "TLS handshake"},
		{"opportunistic, offered", startTLS, TLSOpportunistic, true, ""},
		{"opportunistic, not offered", plain, TLSOpportunistic, false, ""},
		{"none, although offered", startTLS, TLSNone, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.relay.Messages())
			s := newSender(t, tt.relay.Addr, func(c *SMTPConfig) { c.TLS, c.TLSConfig = tt.mode, trust })
			err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit)
			if tt.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fails) {
					t.Fatalf("Send = %v, want a failure mentioning %q", err, tt.fails)
				}
				return
			}
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			msgs := tt.relay.Messages()
			if len(msgs) != before+1 || msgs[len(msgs)-1].TLS != tt.encrypted {
				t.Fatalf("relay got %d new messages, encrypted %v; want 1, encrypted %v", len(msgs)-before, msgs[len(msgs)-1].TLS, tt.encrypted)
			}
		})
	}
	t.Run("a relay whose CA is not trusted", func(t *testing.T) {
		s := newSender(t, startTLS.Addr, func(c *SMTPConfig) { c.TLS = TLSStartTLS })
		if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Send = %v, want a certificate error", err)
		}
	})
}

// TestAuth: the sender authenticates with PLAIN or LOGIN, whichever the
// relay offers, over TLS; a wrong password is a permanent refusal.
func TestAuth(t *testing.T) {
	ca := testkit.NewCA(t)
	trust := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			relay := smtptest.Start(t, smtptest.WithStartTLS(ca.ServerTLS(t)), smtptest.WithAuth("shop", "s3cret-relay-pw", mech))
			s := newSender(t, relay.Addr, func(c *SMTPConfig) {
				c.TLS, c.TLSConfig, c.Username, c.Password = TLSStartTLS, trust, "shop", "s3cret-relay-pw"
			})
			if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if n := len(relay.Messages()); n != 1 {
				t.Fatalf("%d messages, want 1", n)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		relay := smtptest.Start(t, smtptest.WithStartTLS(ca.ServerTLS(t)), smtptest.WithAuth("shop", "right"))
		s := newSender(t, relay.Addr, func(c *SMTPConfig) {
			c.TLS, c.TLSConfig, c.Username, c.Password = TLSStartTLS, trust, "shop", "wr0ng-pw-7a1c"
		})
		err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit)
		var se *SendError
		if !errors.As(err, &se) || se.Code != 535 || !se.Permanent() {
			t.Fatalf("Send = %v, want a permanent 535", err)
		}
		if strings.Contains(err.Error(), "wr0ng-pw-7a1c") {
			t.Fatal("the error shows the password")
		}
	})
	t.Run("no AUTH without TLS, even when the relay asks", func(t *testing.T) {
		relay := smtptest.Start(t, smtptest.WithAuth("shop", "pw"))
		_, err := NewSMTPSender(SMTPConfig{Addr: relay.Addr, From: "a@example.com", TLS: TLSOpportunistic, Username: "shop", Password: "pw"})
		if err == nil {
			t.Fatal("a sender that may send the password in the clear was built")
		}
		if relay.AuthFailures() != 0 {
			t.Fatal("the relay heard an AUTH")
		}
	})
}

// TestWrongPasswordIsDeadLettered: with a relay refusing the password,
// the email goes to DEADLETTER at once with the 535, and the password is
// in no log line and no header.
func TestWrongPasswordIsDeadLettered(t *testing.T) {
	ca := testkit.NewCA(t)
	const password = "wr0ng-pw-9b2d"
	relay := smtptest.Start(t, smtptest.WithStartTLS(ca.ServerTLS(t)), smtptest.WithAuth("shop", "right"))
	g := startWorkers(t, setup{sender: func(c *SMTPConfig) {
		c.Addr = relay.Addr
		c.TLS, c.TLSConfig = TLSStartTLS, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
		c.Username, c.Password = "shop", password
	}})
	ev := testkit.OrderPaid(t)
	g.publish(ev, ev.ID)
	eventually(t, 10*time.Second, "the email dead-lettered", func() bool { return g.deadLetterCount() == 1 && g.pending() == 0 })
	dl := g.deadLetters()[0]
	if dl.Header.Get(HeaderSMTPCode) != "535" || dl.Header.Get(consume.HeaderReason) != "refused by the mail relay" {
		t.Fatalf("dead letter headers %v, want the permanent 535", dl.Header)
	}
	for k, v := range dl.Header {
		if strings.Contains(strings.Join(v, " "), password) {
			t.Fatalf("dead letter header %s shows the password", k)
		}
	}
	if strings.Contains(g.logs.String(), password) {
		t.Fatal("the logs show the password")
	}
	if relay.AuthFailures() != 1 {
		t.Fatalf("the relay refused %d AUTHs, want one: a refused password is not retried", relay.AuthFailures())
	}
	if got := g.state(ev.ID); got != "" && got != string(processed.Done) {
		t.Fatalf("the event is %q in the store, want its claim released", got)
	}
}
