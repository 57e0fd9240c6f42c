package processed

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	if _, err := js.CreateOrUpdateKeyValue(context.Background(), natsx.ProcessedBucket(1, time.Hour)); err != nil {
		t.Fatal(err)
	}
	return New(js)
}

func TestClaimLifecycle(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"
	c, err := s.Claim(ctx, id, "a/1/1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(ctx, id); got != Claimed {
		t.Fatalf("state %q after the claim, want claimed", got)
	}
	// A live holder is never taken over: not by another message, not by
	// a redelivery of its own message.
	for _, holder := range []string{"b/2/1", "a/1/2"} {
		var ce *ClaimedError
		if _, err := s.Claim(ctx, id, holder, time.Minute); !errors.As(err, &ce) || ce.Holder != "a/1/1" || ce.Until.Before(time.Now()) {
			t.Fatalf("claim by %s = %v, want a ClaimedError naming the live holder", holder, err)
		}
	}
	if err := s.Renew(ctx, &c, time.Minute); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := s.MarkDone(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, id, "b/2/1", time.Minute); !errors.Is(err, ErrDone) {
		t.Fatalf("claim of a done id: %v, want ErrDone", err)
	}
	// A late release by a holder that lost its claim must not undo Done.
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(ctx, id); got != Done {
		t.Fatalf("state %q after a stale release, want done", got)
	}
}

func TestReleaseLetsTheNextDeliveryClaim(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61"
	c, err := s.Claim(ctx, id, "a/1/1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(ctx, id); got != "" {
		t.Fatalf("released id is %q, want absent", got)
	}
	if _, err := s.Claim(ctx, id, "a/1/2", time.Minute); err != nil {
		t.Fatalf("claim after release: %v", err)
	}
}

// TestLeaseLapsesAndIsNotRenewedAfter: the claim of a holder that stops
// renewing (it died) lapses on its own and another delivery takes the
// event; the old holder's renewal then fails with ErrClaimLost, so it
// cannot go on to send, and if it had already sent, its Done still wins.
func TestLeaseLapsesAndIsNotRenewedAfter(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f62"
	old, err := s.Claim(ctx, id, "a/1/1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var next Claim
	testkit.Eventually(t, 10*time.Second, "the lapsed claim to be taken", func() bool {
		next, err = s.Claim(ctx, id, "b/1/2", time.Minute)
		return err == nil
	})
	if err := s.Renew(ctx, &old, time.Minute); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("renewal of a lapsed claim = %v, want ErrClaimLost", err)
	}
	if err := s.MarkDone(ctx, old); err != nil {
		t.Fatalf("mark done with a stale revision: %v", err)
	}
	if _, err := s.Claim(ctx, id, "c/1/3", time.Minute); !errors.Is(err, ErrDone) {
		t.Fatalf("claim: %v, want ErrDone", err)
	}
	_ = next
}

// TestRenewKeepsTheLeaseAlive: a holder that renews keeps the event past
// its first lease.
func TestRenewKeepsTheLeaseAlive(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f63"
	c, err := s.Claim(ctx, id, "a/1/1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for range 6 {
		time.Sleep(400 * time.Millisecond)
		if err := s.Renew(ctx, &c, time.Second); err != nil {
			t.Fatalf("renew: %v", err)
		}
	}
	var ce *ClaimedError
	if _, err := s.Claim(ctx, id, "b/1/2", time.Minute); !errors.As(err, &ce) {
		t.Fatalf("claim while the renewed lease lives: %v, want a ClaimedError", err)
	}
}

// TestReplicatedBucketConflicts: on a replicated bucket the server reports
// compare-and-set conflicts as 10164 instead of 10071; the store treats
// both alike.
func TestReplicatedBucketConflicts(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	_, js := natstest.Connect(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateKeyValue(ctx, natsx.ProcessedBucket(3, time.Hour)); err != nil {
		t.Fatal(err)
	}
	s := New(js)
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f64"
	first, err := s.Claim(ctx, id, "a/1/1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var ce *ClaimedError
	if _, err := s.Claim(ctx, id, "b/1/1", time.Minute); !errors.As(err, &ce) {
		t.Fatalf("second claim on R3 = %v, want a ClaimedError", err)
	}
	stale := first
	if err := s.Renew(ctx, &first, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, &stale, time.Minute); !errors.Is(err, ErrClaimLost) {
		var apiErr *jetstream.APIError
		errors.As(err, &apiErr)
		t.Fatalf("renewal with a stale revision on R3 = %v (%+v), want ErrClaimLost", err, apiErr)
	}
	if err := s.MarkDone(ctx, stale); err != nil {
		t.Fatalf("mark done with a stale revision on R3: %v", err)
	}
	if got, _ := s.Lookup(ctx, id); got != Done {
		t.Fatalf("state %q, want done", got)
	}
}

func TestStoreWithoutBucket(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	s := New(js)
	if _, err := s.Lookup(context.Background(), "evt_x"); err == nil {
		t.Fatal("Lookup without the bucket succeeded")
	}
}

// TestWrongLastSequenceCodes: both codes that servers use for a failed
// compare-and-set count as a conflict (the embedded server of the tests
// answers 10071 on R3 too, so the replicated variant is checked here).
func TestWrongLastSequenceCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Code: 400}, true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Code: 400}, true},
		{fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound, Code: 404}, false},
		{errors.New("timeout"), false},
		{nil, false},
	} {
		if got := wrongLastSequence(tc.err); got != tc.want {
			t.Errorf("wrongLastSequence(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestTakeOver(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f65"
	if _, err := s.Claim(ctx, id, "p/1/1", time.Minute); err != nil {
		t.Fatal(err)
	}
	var ce *ClaimedError
	if _, err := s.Claim(ctx, id, "p/1/2", time.Minute); !errors.As(err, &ce) {
		t.Fatalf("second claim = %v, want a ClaimedError", err)
	}
	c, err := s.TakeOver(ctx, id, ce.Rev, "p/1/2", time.Minute)
	if err != nil || c.Holder != "p/1/2" {
		t.Fatalf("TakeOver = %+v, %v", c, err)
	}
	// A take-over of a claim that moved on since it was read is refused.
	if _, err := s.TakeOver(ctx, id, ce.Rev, "p/1/3", time.Minute); !errors.As(err, &ce) || ce.Holder != "p/1/2" {
		t.Fatalf("stale TakeOver = %v, want the new holder's ClaimedError", err)
	}
}
