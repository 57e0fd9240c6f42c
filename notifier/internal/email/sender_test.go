package email

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/smtptest"
)

func TestSMTPSender(t *testing.T) {
	mail := smtptest.Start(t)
	ev := sampleEvent()
	s := &SMTPSender{Addr: mail.Addr, From: "orders@example.com", Timeout: 5 * time.Second}
	if err := s.Send(context.Background(), NewMessage(ev)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := mail.Messages()
	if len(msgs) != 1 || msgs[0].To[0] != "ada@example.com" || msgs[0].From != "orders@example.com" {
		t.Fatalf("server got %+v", msgs)
	}
}

func TestSMTPSenderFailures(t *testing.T) {
	refusing := smtptest.Start(t)
	refusing.Refuse(1)

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
		name    string
		addr    string
		ctx     context.Context
		timeout time.Duration
	}{
		{"refused with 451", refusing.Addr, context.Background(), 5 * time.Second},
		{"nothing listening", closedAddr, context.Background(), 5 * time.Second},
		{"no greeting", silent.Addr().String(), context.Background(), 200 * time.Millisecond},
		{"caller gave up", silent.Addr().String(), cancelled, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &SMTPSender{Addr: tt.addr, From: "orders@example.com", Timeout: tt.timeout}
			start := time.Now()
			err := s.Send(tt.ctx, NewMessage(sampleEvent()))
			if err == nil {
				t.Fatal("Send succeeded, want an error")
			}
			if elapsed := time.Since(start); elapsed > tt.timeout+time.Second {
				t.Errorf("Send took %s, want at most about %s", elapsed, tt.timeout)
			}
		})
	}
	if n := len(refusing.Messages()); n != 0 {
		t.Errorf("refusing server recorded %d messages", n)
	}
}

func TestLogSender(t *testing.T) {
	var buf bytes.Buffer
	s := LogSender{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	ev := sampleEvent()
	if err := s.Send(context.Background(), NewMessage(ev)); err != nil {
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
