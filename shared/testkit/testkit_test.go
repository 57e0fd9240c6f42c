package testkit

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

func TestFreeAddrIsFree(t *testing.T) {
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr gave %s, which cannot be listened on: %v", addr, err)
	}
	ln.Close()
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	start := time.Now()
	Eventually(t, 5*time.Second, "50 ms to pass", func() bool { return time.Since(start) > 50*time.Millisecond })
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("returned before the condition held")
	}
}

func TestSyncBufferKeepsEveryWrite(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { fmt.Fprintf(&b, "%d\n", i) })
	}
	wg.Wait()
	if n := len(b.String()); n != 20 {
		t.Fatalf("buffer holds %d bytes, want 20", n)
	}
}

func TestOrderPaidMeetsTheContract(t *testing.T) {
	a, b := OrderPaid(t), OrderPaid(t)
	if f := a.Validate(); len(f) != 0 {
		t.Fatalf("OrderPaid breaks the contract: %v", f)
	}
	if a.ID == b.ID || a.Data.OrderID == b.Data.OrderID {
		t.Fatal("two events share an id")
	}
}
