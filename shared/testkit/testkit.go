// Package testkit holds the few helpers that every test running real
// servers here needs: a free port on 127.0.0.1, polling with a deadline
// instead of sleeping, a goroutine-safe buffer for a process's output, and
// a valid event to send.
package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/jethook/jethook/shared/event"
)

// FreeAddr returns a 127.0.0.1 address that was free a moment ago, for a
// server a test starts later. Its port is below the kernel's range of
// ephemeral ports (32768 and up on Linux), from which the source ports of
// outgoing connections and the ports of ":0" listeners come: a port from
// that range, free when asked, is often taken by some connection before
// the server binds it, on a machine running many tests at once. Below the
// range, only another FreeAddr can take it: in this process it never
// hands a port out twice, and another process of ours cannot have it
// either, since each holds a lock on the ports it handed out (claimPort).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// FreePort is FreeAddr's port, for tools that are not tests (the chaos
// harness, the benchmark runner), whose processes restart on the same
// port again and again.
func FreePort() (int, error) {
	const lo, hi = 20000, 32000
	start := lo + rand.IntN(hi-lo)
	for i := range hi - lo {
		port := lo + (start-lo+i)%(hi-lo)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		if !claimPort(port) {
			// Another test process handed it out: it may bind it any
			// moment.
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("no free port on 127.0.0.1 below the ephemeral range")
}

// handedOut remembers the ports FreeAddr gave this test process, so that
// two tests of one process never get the same one.
var handedOut sync.Map

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
