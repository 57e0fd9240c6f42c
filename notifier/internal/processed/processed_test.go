package processed

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
)

func newStore(t *testing.T, claimTTL time.Duration) (*Store, jetstream.KeyValue) {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), natsx.ProcessedBucket(1, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return New(js, claimTTL), kv
}

func TestStoreLifecycle(t *testing.T) {
	s, _ := newStore(t, time.Minute)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"
	steps := []struct {
		name string
		do   func() error
		want State
	}{
		{"unknown", func() error { return nil }, ""},
		{"claim", func() error { _, err := s.Claim(ctx, id, "seq-1"); return err }, Claimed},
		{"another message's claim is refused", func() error {
			if _, err := s.Claim(ctx, id, "seq-2"); !errors.Is(err, ErrClaimed) {
				return errors.New("want ErrClaimed, got " + errString(err))
			}
			return nil
		}, Claimed},
		{"a redelivery of the same message takes its stale claim over", func() error {
			_, err := s.Claim(ctx, id, "seq-1")
			return err
		}, Claimed},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got, err := s.Lookup(ctx, id); err != nil || got != st.want {
			t.Fatalf("%s: state %q (%v), want %q", st.name, got, err, st.want)
		}
	}
}

func TestStoreReleaseAndDone(t *testing.T) {
	s, _ := newStore(t, time.Minute)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61"
	rev, err := s.Claim(ctx, id, "seq-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, id, rev); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(ctx, id); got != "" {
		t.Fatalf("released id is %q, want absent", got)
	}
	rev, err = s.Claim(ctx, id, "seq-1")
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	if err := s.MarkDone(ctx, id, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, id, "seq-1"); !errors.Is(err, ErrDone) {
		t.Fatalf("claim of a done id: %v, want ErrDone", err)
	}
	// A late release by a worker that lost its claim must not undo Done.
	if err := s.Release(ctx, id, rev); err == nil {
		t.Fatal("release of a stale revision succeeded")
	}
	if got, _ := s.Lookup(ctx, id); got != Done {
		t.Fatalf("state %q, want done", got)
	}
}

func TestStoreCrashedClaimExpires(t *testing.T) {
	s, _ := newStore(t, time.Second)
	ctx := context.Background()
	const id = "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f62"
	oldRev, err := s.Claim(ctx, id, "seq-1")
	if err != nil {
		t.Fatal(err)
	}
	// The worker dies here. Its claim must expire so that another message
	// for the same event (a webhook published again after the duplicate
	// window) can be claimed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = s.Claim(ctx, id, "seq-2")
		if err == nil {
			break
		}
		if !errors.Is(err, ErrClaimed) || time.Now().After(deadline) {
			t.Fatalf("claim after expiry: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The first worker was only slow; it finishes after all. Done wins over
	// the second claim, since the email has gone out.
	if err := s.MarkDone(ctx, id, oldRev); err != nil {
		t.Fatalf("mark done with a stale revision: %v", err)
	}
	if got, _ := s.Lookup(ctx, id); got != Done {
		t.Fatalf("state %q, want done", got)
	}
	if _, err := s.Claim(ctx, id, "seq-1"); !errors.Is(err, ErrDone) {
		t.Fatalf("claim: %v, want ErrDone", err)
	}
}

func TestStoreWithoutBucket(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	s := New(js, time.Minute)
	if _, err := s.Lookup(context.Background(), "evt_x"); err == nil {
		t.Fatal("Lookup without the bucket succeeded")
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
