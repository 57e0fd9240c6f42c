package smtptest

import (
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/testkit"
)

// send delivers one message, giving up after timeout.
func send(addr string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("shop@example.com"); err != nil {
		return err
	}
	if err := c.Rcpt("ada@example.com"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte("Subject: hello\r\n\r\nbody\r\n")); err != nil {
		return err
	}
	return w.Close()
}

func TestStall(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	s.Stall(true)
	if err := send(s.Addr, 300*time.Millisecond); err == nil {
		t.Fatal("a stalled message was answered")
	}
	s.Stall(false)
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages recorded during the stall, want 0", n)
	}
	if err := send(s.Addr, 2*time.Second); err != nil {
		t.Fatalf("after the stall: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Fatalf("%d messages recorded, want 1", n)
	}
	if n := s.Attempts(); n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
}

func TestRefuseUntilReset(t *testing.T) {
	s := Start(t)
	s.Refuse(1 << 30)
	for range 3 {
		if err := send(s.Addr, 2*time.Second); err == nil {
			t.Fatal("a message was accepted while refusing")
		}
	}
	s.Refuse(0)
	if err := send(s.Addr, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if len(s.Messages()) != 1 || s.Refused() != 3 {
		t.Fatalf("messages=%d refused=%d, want 1 and 3", len(s.Messages()), s.Refused())
	}
}

// TestCloseReleasesWaitingClients: a client whose message is stalled after
// DATA, or held at MAIL FROM, is refused when the server stops, not left
// hanging, and nothing is recorded.
func TestCloseReleasesWaitingClients(t *testing.T) {
	tests := []struct {
		name    string
		wait    func(*Server)
		waiting func(*Server) bool
	}{
		{"stalled after DATA", func(s *Server) { s.Stall(true) }, func(s *Server) bool { return s.Attempts() == 1 }},
		{"held at MAIL FROM", func(s *Server) { s.Hold(true) }, func(s *Server) bool { return s.Held() == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tt.wait(s)
			done := make(chan error, 1)
			go func() { done <- send(s.Addr, 5*time.Second) }()
			testkit.Eventually(t, 2*time.Second, "the message to wait", func() bool { return tt.waiting(s) })
			_ = s.Close()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("a waiting message was accepted on Close")
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Close left the waiting client hanging")
			}
			if n := len(s.Messages()); n != 0 {
				t.Fatalf("%d messages recorded, want 0", n)
			}
		})
	}
}

func TestLatencyDelaysTheAnswerToTheFinalDot(t *testing.T) {
	s := Start(t)
	s.SetLatency(300 * time.Millisecond)
	start := time.Now()
	if err := send(s.Addr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("answered after %s, want at least the 300ms latency", took)
	}
	if n := len(s.Messages()); n != 1 {
		t.Fatalf("%d messages recorded, want 1: a slow answer is still an acceptance", n)
	}
}

func TestRejectRecipientsIsPermanent(t *testing.T) {
	s := Start(t)
	s.RejectRecipients(func(addr string) bool { return addr == "ada@example.com" })
	err := send(s.Addr, 2*time.Second)
	var tp *textproto.Error
	if !errors.As(err, &tp) || tp.Code != 550 {
		t.Fatalf("send to a rejected recipient = %v, want a 550 reply", err)
	}
	if s.Rejected() != 1 || len(s.Messages()) != 0 {
		t.Fatalf("rejected=%d messages=%d, want 1 and 0", s.Rejected(), len(s.Messages()))
	}
	s.RejectRecipients(nil)
	if err := send(s.Addr, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := s.Sessions(); n != 2 {
		t.Fatalf("%d sessions counted, want one per connection (2)", n)
	}
}

// TestHoldKeepsMessagesBeforeTheirDot: while held, a client waits at MAIL
// FROM, so it has sent nothing the relay could accept, and Open says that
// no transaction waits for its answer; released, the message goes through.
// A message waiting out the latency counts as open and in flight until it
// is answered.
func TestHoldKeepsMessagesBeforeTheirDot(t *testing.T) {
	s := Start(t)
	s.Hold(true)
	done := make(chan error, 1)
	go func() { done <- send(s.Addr, 5*time.Second) }()
	testkit.Eventually(t, 2*time.Second, "the message held at MAIL FROM", func() bool { return s.Held() == 1 })
	if n := s.Open(); n != 0 {
		t.Fatalf("Open() = %d while the only transaction is held before MAIL FROM is answered, want 0", n)
	}
	s.SetLatency(300 * time.Millisecond)
	s.Hold(false)
	testkit.Eventually(t, 2*time.Second, "the released message waiting out the latency", func() bool { return s.InFlight() == 1 })
	if n := s.Open(); n != 1 {
		t.Fatalf("Open() = %d while a message waits for its answer, want 1", n)
	}
	if err := <-done; err != nil {
		t.Fatalf("the released message: %v", err)
	}
	// The transaction closes just after its answer is written.
	testkit.Eventually(t, 2*time.Second, "the answered transaction to close", func() bool { return s.Open() == 0 })
	if s.InFlight() != 0 || s.Held() != 0 || len(s.Messages()) != 1 {
		t.Fatalf("in_flight=%d held=%d messages=%d after the answer, want 0, 0 and 1",
			s.InFlight(), s.Held(), len(s.Messages()))
	}
}

// TestOpenEndsWithARefusedRecipient: a transaction whose recipient is
// refused is abandoned when its client closes the connection.
func TestOpenEndsWithARefusedRecipient(t *testing.T) {
	s := Start(t)
	s.RejectRecipients(func(string) bool { return true })
	if err := send(s.Addr, 2*time.Second); err == nil {
		t.Fatal("a refused recipient was accepted")
	}
	testkit.Eventually(t, 2*time.Second, "the abandoned transaction to close", func() bool { return s.Open() == 0 })
}
