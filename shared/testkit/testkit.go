// Package testkit holds the few helpers that every test running real
// servers here needs: a free port on 127.0.0.1, polling with a deadline
// instead of sleeping, a goroutine-safe buffer for a process's output, and
// a valid event to send.
package testkit

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/jethook/jethook/shared/event"
)

// FreeAddr returns a 127.0.0.1 address that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Eventually polls cond every 10 ms until it holds, and fails the test
// naming what it waited for when timeout passes first.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer collects output written from several goroutines, such as a
// service's log while it runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// OrderPaid returns a valid order.paid event with fresh ids, dated now: a
// book for ada@example.com, 2 × 10.50 USD.
func OrderPaid(tb testing.TB) event.OrderPaid {
	tb.Helper()
	id, err := event.NewID()
	if err != nil {
		tb.Fatal(err)
	}
	orderID, err := uuid.NewV7()
	if err != nil {
		tb.Fatal(err)
	}
	return event.OrderPaid{
		ID: id, Type: event.TypeOrderPaid, Timestamp: time.Now().UTC().Truncate(time.Second),
		Data: event.OrderData{
			OrderID: orderID.String(), CustomerEmail: "ada@example.com",
			ProductName: "Book", Quantity: 2, AmountMinor: 2100, Currency: "USD",
		},
	}
}
