package processed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// State is the value stored under an event id.
type State string

// The states of an event id. An id that is not in the store has the zero
// State: nobody has taken it yet. A claim is stored as "claimed:<owner>".
const (
	Claimed State = "claimed"
	Done    State = "done"
)

// Claim errors say why an event id could not be claimed; both are expected
// and decide what happens to the message.
var (
	// ErrDone means the email of the event was already sent.
	ErrDone = errors.New("event already processed")
	// ErrClaimed means another worker holds the event, or a crashed
	// worker's claim has not expired yet.
	ErrClaimed = errors.New("event claimed by another worker")
)

// Store reads and writes the notifier_processed bucket. It opens the bucket
// on first use, because the service starts before NATS is provisioned.
type Store struct {
	js       jetstream.JetStream
	claimTTL time.Duration

	mu sync.Mutex
	kv jetstream.KeyValue
}

// New returns a Store on js whose claims expire after claimTTL unless they
// are turned into Done.
func New(js jetstream.JetStream, claimTTL time.Duration) *Store {
	return &Store{js: js, claimTTL: claimTTL}
}

// ClaimTTL is how long a claim lives unless it is turned into Done.
func (s *Store) ClaimTTL() time.Duration { return s.claimTTL }

func (s *Store) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.js.KeyValue(ctx, natsx.BucketProcessed)
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", natsx.BucketProcessed, err)
	}
	s.kv = kv
	return kv, nil
}

// Lookup returns the state of eventID, or "" when it is not in the store.
func (s *Store) Lookup(ctx context.Context, eventID string) (State, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return "", err
	}
	entry, err := kv.Get(ctx, eventID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look up %s: %w", eventID, err)
	}
	return stateOf(entry.Value()), nil
}

// stateOf reads a stored value: a claim of any owner is Claimed.
func stateOf(value []byte) State {
	if strings.HasPrefix(string(value), string(Claimed)+":") {
		return Claimed
	}
	return State(value)
}

// Claim takes eventID for owner (the NOTIFICATIONS message being
// processed, by its stream sequence) and returns the revision that proves
// it, to be passed to Release or MarkDone. The claim carries its own TTL, so
// the claim of a worker that dies mid-send expires and the redelivered
// message can be claimed again. When the claim found belongs to owner, it
// was left by an earlier delivery of this very message, whose worker died
// or never heard that its claim was stored: that delivery is over (the
// message would not have come back otherwise), so the claim is taken over
// at once instead of waiting for its TTL. It returns ErrDone or ErrClaimed
// when the id is taken.
func (s *Store) Claim(ctx context.Context, eventID, owner string) (uint64, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return 0, err
	}
	value := []byte(string(Claimed) + ":" + owner)
	rev, err := kv.Create(ctx, eventID, value, jetstream.KeyTTL(s.claimTTL))
	if err == nil {
		return rev, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("claim %s: %w", eventID, err)
	}
	entry, err := kv.Get(ctx, eventID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		// Released between Create and Get: trying again later is right.
		return 0, ErrClaimed
	case err != nil:
		return 0, fmt.Errorf("look up %s: %w", eventID, err)
	}
	switch State(entry.Value()) {
	case Done:
		return 0, ErrDone
	case State(value):
		// Take over our own stale claim with a fresh TTL. If another
		// worker slips in between, it holds the event and we wait.
		if err := kv.Delete(ctx, eventID, jetstream.LastRevision(entry.Revision())); err != nil {
			return 0, ErrClaimed
		}
		rev, err := kv.Create(ctx, eventID, value, jetstream.KeyTTL(s.claimTTL))
		if err != nil {
			return 0, ErrClaimed
		}
		return rev, nil
	}
	return 0, ErrClaimed
}

// Release gives up the claim of revision rev after a failed send, so that
// the next delivery can claim the event at once. It does nothing if the
// claim has already moved on.
func (s *Store) Release(ctx context.Context, eventID string, rev uint64) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, eventID, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("release %s: %w", eventID, err)
	}
	return nil
}

// MarkDone records that the email of eventID was sent. The new revision
// has no per-key TTL, so it lives for the bucket's TTL instead of the
// claim's. If the claim expired meanwhile and someone else claimed the id,
// Done still wins: the email has gone out.
func (s *Store) MarkDone(ctx context.Context, eventID string, rev uint64) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Update(ctx, eventID, []byte(Done), rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		_, err = kv.Put(ctx, eventID, []byte(Done))
	}
	if err != nil {
		return fmt.Errorf("mark %s done: %w", eventID, err)
	}
	return nil
}
