package email

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/smtptest"
)

// noCommit is the commit of a send that nothing guards.
func noCommit(context.Context, time.Duration) error { return nil }

func newSender(t testing.TB, addr string, change func(*SMTPConfig)) *SMTPSender {
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
// connection, and a connection the relay dropped is replaced without the
// message failing.
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

// TestSMTPSenderCommandsPerMessage: on a reused connection an email costs
// MAIL, RCPT, DATA and the message, nothing more; a refused recipient
// leaves its transaction open, and RSET closes it before the next email,
// which the relay then accepts on the same connection.
func TestSMTPSenderCommandsPerMessage(t *testing.T) {
	mail := smtptest.Start(t)
	var reject atomic.Bool
	mail.RejectRecipients(func(string) bool { return reject.Load() })
	addr, count := countCommands(t, mail.Addr)
	s := newSender(t, addr, nil)
	send := func() error { return s.Send(context.Background(), NewMessage(sampleEvent()), noCommit) }
	for range 3 {
		if err := send(); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{"EHLO": 1, "RSET": 0, "MAIL": 3, "RCPT": 3, "DATA": 3}
	for verb, n := range want {
		if got := count(verb); got != n {
			t.Errorf("%s sent %d times for 3 emails on one connection, want %d", verb, got, n)
		}
	}

	reject.Store(true)
	var se *SendError
	if err := send(); !errors.As(err, &se) || se.Stage != StageRcpt || se.Code != 550 {
		t.Fatalf("send to a refused recipient: %v, want 550 at RCPT", err)
	}
	reject.Store(false)
	if err := send(); err != nil {
		t.Fatalf("send after a refused recipient: %v", err)
	}
	if got := count("RSET"); got != 1 {
		t.Errorf("RSET sent %d times after one refused transaction, want 1", got)
	}
	if n, m := mail.Sessions(), len(mail.Messages()); n != 1 || m != 4 {
		t.Errorf("%d connections and %d messages, want 1 and 4", n, m)
	}
}

// countCommands starts a proxy to the relay at addr that counts the
// commands its clients send, by verb, leaving out the message text.
func countCommands(t *testing.T, addr string) (proxy string, count func(verb string) int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	counts := map[string]int{}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			relay, err := net.Dial("tcp", addr)
			if err != nil {
				client.Close()
				continue
			}
			t.Cleanup(func() { client.Close(); relay.Close() })
			go func() { _, _ = io.Copy(client, relay) }()
			go func() {
				r := bufio.NewReader(client)
				inData := false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						relay.Close()
						return
					}
					if inData {
						inData = line != ".\r\n"
					} else {
						verb, _, _ := strings.Cut(strings.TrimSpace(line), " ")
						verb = strings.ToUpper(verb)
						mu.Lock()
						counts[verb]++
						mu.Unlock()
						inData = verb == "DATA"
					}
					if _, err := io.WriteString(relay, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func(verb string) int {
		mu.Lock()
		defer mu.Unlock()
		return counts[verb]
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

// BenchmarkSMTPSender sends b.N emails from about 16 goroutines over the pool to
// an in-process relay that answers at once: the cost of an email's SMTP
// conversation, both ends of it in this process.
func BenchmarkSMTPSender(b *testing.B) {
	mail := smtptest.Start(b)
	s := newSender(b, mail.Addr, func(c *SMTPConfig) { c.MaxConns = 16 })
	m := NewMessage(sampleEvent())
	b.SetParallelism(max(16/runtime.GOMAXPROCS(0), 1))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Send(context.Background(), m, noCommit); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
