package email

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/smtptest"
)

// noCommit is the commit of a send that nothing guards.
func noCommit(context.Context, time.Duration) error { return nil }

func newSender(t *testing.T, addr string, change func(*SMTPConfig)) *SMTPSender {
	t.Helper()
	cfg := SMTPConfig{
		Addr: addr, From: "orders@example.com",
		CommandTimeout: 2 * time.Second, DataTimeout: 5 * time.Second, MaxConns: 4,
	}
	if change != nil {
		change(&cfg)
	}
	s, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestSMTPSenderSends(t *testing.T) {
	mail := smtptest.Start(t)
	s := newSender(t, mail.Addr, nil)
	if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := mail.Messages()
	if len(msgs) != 1 || msgs[0].To[0] != "ada@example.com" || msgs[0].From != "orders@example.com" {
		t.Fatalf("server got %+v", msgs)
	}
}

// TestSMTPSenderReusesConnections: messages one after another share one
// connection, reset between them, and a connection the relay dropped is
// replaced without the message failing.
func TestSMTPSenderReusesConnections(t *testing.T) {
	mail := smtptest.Start(t)
	s := newSender(t, mail.Addr, nil)
	for range 3 {
		if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err != nil {
			t.Fatal(err)
		}
	}
	if n := mail.Sessions(); n != 1 {
		t.Fatalf("%d connections for 3 messages in a row, want 1 reused", n)
	}
	mail.DisconnectAll()
	if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err != nil {
		t.Fatalf("send after the relay dropped the idle connection: %v", err)
	}
	if n, m := mail.Sessions(), len(mail.Messages()); n != 2 || m != 4 {
		t.Fatalf("%d connections and %d messages, want 2 and 4", n, m)
	}
}

// TestSMTPSenderWaitsForTheFinalDot: the answer to the final dot is waited
// for as long as DataTimeout, not the command timeout, and a refusal of a
// command leaves the connection usable.
func TestSMTPSenderWaitsForTheFinalDot(t *testing.T) {
	mail := smtptest.Start(t)
	mail.SetLatency(1500 * time.Millisecond)
	s := newSender(t, mail.Addr, func(c *SMTPConfig) { c.CommandTimeout = 500 * time.Millisecond })
	if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err != nil {
		t.Fatalf("a relay answering the dot after 1.5 s with a 500 ms command timeout: %v", err)
	}
	if n := len(mail.Messages()); n != 1 {
		t.Fatalf("%d messages accepted, want 1", n)
	}
}

func TestSMTPSenderFailures(t *testing.T) {
	refusing := smtptest.Start(t)
	refusing.Refuse(1 << 30)
	rejecting := smtptest.Start(t)
	rejecting.RejectRecipients(func(string) bool { return true })
	slow := smtptest.Start(t)
	slow.SetLatency(3 * time.Second)

	// silent accepts connections but never greets, like a hung server.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name      string
		addr      string
		ctx       context.Context
		change    func(*SMTPConfig)
		stage     string
		code      int
		permanent bool
		unknown   bool
	}{
		{"451 at the end of data is temporary", refusing.Addr, context.Background(), nil, StageDot, 451, false, false},
		{"550 at RCPT is permanent", rejecting.Addr, context.Background(), nil, StageRcpt, 550, true, false},
		{"nothing listening", closedAddr, context.Background(), nil, StageConnect, 0, false, false},
		{"no greeting", silent.Addr().String(), context.Background(), func(c *SMTPConfig) { c.CommandTimeout = 200 * time.Millisecond }, StageConnect, 0, false, false},
		{"caller gave up", silent.Addr().String(), cancelled, nil, StageConnect, 0, false, false},
		{"no answer to the dot: the relay may have it", slow.Addr, context.Background(), func(c *SMTPConfig) { c.DataTimeout = 300 * time.Millisecond }, StageDot, 0, false, true},
		{"STARTTLS required but not offered", refusing.Addr, context.Background(), func(c *SMTPConfig) { c.TLS = TLSStartTLS }, StageConnect, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(t, tt.addr, tt.change)
			start := time.Now()
			err := s.Send(tt.ctx, NewMessage(sampleEvent()), noCommit)
			var se *SendError
			if !errors.As(err, &se) {
				t.Fatalf("Send = %v, want a *SendError", err)
			}
			if se.Stage != tt.stage || se.Code != tt.code || se.Permanent() != tt.permanent || se.Unknown() != tt.unknown {
				t.Fatalf("Send = %v (stage %q code %d permanent %v unknown %v), want stage %q code %d permanent %v unknown %v",
					se, se.Stage, se.Code, se.Permanent(), se.Unknown(), tt.stage, tt.code, tt.permanent, tt.unknown)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Send took %s", elapsed)
			}
		})
	}
	if n := len(refusing.Messages()) + len(rejecting.Messages()); n != 0 {
		t.Errorf("refusing servers recorded %d messages", n)
	}
}

// TestCommitRefusalSendsNothing: a send whose commit fails ends before the
// final dot, and the relay keeps nothing.
func TestCommitRefusalSendsNothing(t *testing.T) {
	mail := smtptest.Start(t)
	s := newSender(t, mail.Addr, nil)
	lost := errors.New("claim lost")
	err := s.Send(context.Background(), NewMessage(sampleEvent()), func(context.Context, time.Duration) error { return lost })
	var se *SendError
	if !errors.As(err, &se) || se.Stage != StageCommit || !errors.Is(err, lost) {
		t.Fatalf("Send = %v, want a commit failure", err)
	}
	// The relay sees the connection drop mid-DATA and discards the text.
	if err := s.Send(context.Background(), NewMessage(sampleEvent()), noCommit); err != nil {
		t.Fatal(err)
	}
	if n := len(mail.Messages()); n != 1 {
		t.Fatalf("%d messages accepted, want only the committed one", n)
	}
}

func TestSMTPSenderRefusesAPasswordInTheClear(t *testing.T) {
	for _, mode := range []string{TLSNone, TLSOpportunistic} {
		_, err := NewSMTPSender(SMTPConfig{Addr: "127.0.0.1:25", From: "a@example.com", TLS: mode, Username: "u", Password: "p"})
		if err == nil {
			t.Errorf("TLS mode %s with a password accepted", mode)
		}
	}
}

func TestLogSender(t *testing.T) {
	var buf bytes.Buffer
	s := LogSender{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	ev := sampleEvent()
	if err := s.Send(context.Background(), NewMessage(ev), noCommit); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log %s: %v", buf.Bytes(), err)
	}
	want := map[string]any{
		"msg":      "Sending confirmation email to ada@example.com for order " + ev.Data.OrderID,
		"event_id": ev.ID,
		"order_id": ev.Data.OrderID,
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
}
