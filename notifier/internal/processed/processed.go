package processed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// State is what the store says of an event id.
type State string

// The states of an event id. An id that is not in the store has the zero
// State: nobody has taken it yet, or the claim on it lapsed.
const (
	Claimed State = "claimed"
	Done    State = "done"
)

// Errors of the claim operations. Each is expected and decides what
// happens to the message.
var (
	// ErrDone means the email of the event was already sent.
	ErrDone = errors.New("event already processed")
	// ErrClaimLost means the claim lapsed and another delivery took the
	// event: the holder must not send.
	ErrClaimLost = errors.New("claim lost to another delivery")
)

// ClaimedError means a delivery holds the event. Until is when its lease
// ends unless it is renewed; Rev is the revision of the claim, for
// TakeOver.
type ClaimedError struct {
	Holder string
	Until  time.Time
	Rev    uint64
}

func (e *ClaimedError) Error() string {
	return fmt.Sprintf("event claimed by %s until %s", e.Holder, e.Until.UTC().Format(time.RFC3339))
}

// Claim is a lease on one event id, held by one delivery of its message.
// Only the holder of a live lease may send; a lease that is not renewed
// lapses on its own (the key's TTL), which is how the claim of a process
// that died is released, and the only way: a live holder is never taken
// over.
type Claim struct {
	EventID string
	Holder  string
	// Rev is the revision of the key that proves the lease.
	Rev uint64
	// Until is when the lease ends unless it is renewed.
	Until time.Time
}

// Store reads and writes the notifier_processed bucket. It opens the bucket
// on first use, because the service starts before NATS is provisioned.
type Store struct {
	js  jetstream.JetStream
	now func() time.Time

	mu sync.Mutex
	kv jetstream.KeyValue
}

// New returns a Store on js.
func New(js jetstream.JetStream) *Store { return &Store{js: js, now: time.Now} }

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
	state, _, _ := parse(entry.Value())
	return state, nil
}

// claimValue is the stored form of a lease: "claimed:<holder>:<until, unix ms>".
func claimValue(holder string, until time.Time) []byte {
	return fmt.Appendf(nil, "%s:%s:%d", Claimed, holder, until.UnixMilli())
}

// parse reads a stored value.
func parse(value []byte) (state State, holder string, until time.Time) {
	rest, ok := strings.CutPrefix(string(value), string(Claimed)+":")
	if !ok {
		return State(value), "", time.Time{}
	}
	holder, ms, _ := strings.Cut(rest, ":")
	var n int64
	_, _ = fmt.Sscan(ms, &n)
	return Claimed, holder, time.UnixMilli(n)
}

// Claim takes eventID for holder, the delivery being processed, for lease.
// It returns ErrDone when the email was sent, and a *ClaimedError when a
// live delivery holds the event, whoever that is: a redelivery of the
// same message too, since a slow worker may still be sending it.
func (s *Store) Claim(ctx context.Context, eventID, holder string, lease time.Duration) (Claim, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return Claim{}, err
	}
	until := s.now().Add(lease)
	rev, err := kv.Create(ctx, eventID, claimValue(holder, until), jetstream.KeyTTL(lease))
	if err == nil {
		return Claim{EventID: eventID, Holder: holder, Rev: rev, Until: until}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return Claim{}, fmt.Errorf("claim %s: %w", eventID, err)
	}
	entry, err := kv.Get(ctx, eventID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		// Released or lapsed between Create and Get: try again soon.
		return Claim{}, &ClaimedError{Holder: "unknown", Until: s.now()}
	case err != nil:
		return Claim{}, fmt.Errorf("look up %s: %w", eventID, err)
	}
	state, other, otherUntil := parse(entry.Value())
	if state == Done {
		return Claim{}, ErrDone
	}
	return Claim{}, &ClaimedError{Holder: other, Until: otherUntil, Rev: entry.Revision()}
}

// TakeOver replaces the claim held at revision rev, whose holder the
// caller knows to be dead, with a claim for holder. Only the process that
// made a claim can know that: its own delivery that failed without
// hearing whether its claim was stored. Anyone else waits for the lease
// to lapse. TakeOver fails with a *ClaimedError when the claim moved on
// meanwhile.
func (s *Store) TakeOver(ctx context.Context, eventID string, rev uint64, holder string, lease time.Duration) (Claim, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return Claim{}, err
	}
	err = kv.Delete(ctx, eventID, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || wrongLastSequence(err) {
		return s.Claim(ctx, eventID, holder, lease)
	}
	if err != nil {
		return Claim{}, fmt.Errorf("take over %s: %w", eventID, err)
	}
	return s.Claim(ctx, eventID, holder, lease)
}

// Renew extends c's lease to lease from now. It fails with ErrClaimLost if
// the lease lapsed and another delivery took the event.
func (s *Store) Renew(ctx context.Context, c *Claim, lease time.Duration) error {
	if _, err := s.bucket(ctx); err != nil {
		return err
	}
	until := s.now().Add(lease)
	// KeyValue.Update takes no TTL; a claim is renewed with the publish
	// that Update makes, plus the message TTL.
	msg := nats.NewMsg("$KV." + natsx.BucketProcessed + "." + c.EventID)
	msg.Data = claimValue(c.Holder, until)
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(c.Rev), jetstream.WithMsgTTL(lease))
	if wrongLastSequence(err) {
		return fmt.Errorf("renew claim on %s: %w", c.EventID, ErrClaimLost)
	}
	if err != nil {
		return fmt.Errorf("renew claim on %s: %w", c.EventID, err)
	}
	c.Rev, c.Until = ack.Sequence, until
	return nil
}

// wrongLastSequence reports a compare-and-set conflict: code 10071, or
// 10164 on replicated streams, as nats.go's own KV code accepts both.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Release gives c up after a failed send, so that the next delivery can
// claim the event at once. It does nothing if the claim has moved on.
func (s *Store) Release(ctx context.Context, c Claim) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	err = kv.Delete(ctx, c.EventID, jetstream.LastRevision(c.Rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !wrongLastSequence(err) {
		return fmt.Errorf("release %s: %w", c.EventID, err)
	}
	return nil
}

// MarkDone records that the email of c's event was sent. The new revision
// has no TTL of its own, so it lives for the bucket's TTL. If the lease
// lapsed meanwhile and another delivery claimed the event, Done still
// wins: the email has gone out.
func (s *Store) MarkDone(ctx context.Context, c Claim) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Update(ctx, c.EventID, []byte(Done), c.Rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || wrongLastSequence(err) {
		_, err = kv.Put(ctx, c.EventID, []byte(Done))
	}
	if err != nil {
		return fmt.Errorf("mark %s done: %w", c.EventID, err)
	}
	return nil
}
