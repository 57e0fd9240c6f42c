package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// Errors of the registry; compare with errors.Is.
var (
	// ErrNotFound: no subscription has this id.
	ErrNotFound = errors.New("no subscription with this id")
	// ErrStale: the subscription changed since the revision the caller
	// named (If-Match).
	ErrStale = errors.New("the subscription changed since the revision given")
	// ErrUnavailable: NATS did not answer, or the bucket is not
	// provisioned yet; the call may be retried.
	ErrUnavailable = errors.New("the subscription registry is unavailable")
	// ErrTooManySecrets: a rotation would leave more than MaxSecrets
	// secrets signing at once.
	ErrTooManySecrets = fmt.Errorf("a subscription signs with at most %d secrets at once; rotate with a shorter grace, or wait for one to expire", MaxSecrets)
	// ErrInvalid: a status, reason, grace or fixed subscription that the
	// contract does not allow.
	ErrInvalid = errors.New("invalid request")
)

// Rotation bounds.
const (
	// DefaultGrace is how long a rotated secret keeps signing beside its
	// successor: a day lets every receiver pick up the new one.
	DefaultGrace = 24 * time.Hour
	// MaxGrace bounds the grace period: a week.
	MaxGrace = 7 * 24 * time.Hour
	// MaxSecrets bounds the secrets signing at once, and so the length of
	// the webhook-signature header.
	MaxSecrets = 5
)

// casAttempts bounds the read-modify-write retries of a change without an
// expected revision, when other writers keep winning the race; between
// attempts, casPause spreads the contenders out.
const casAttempts = 20

// casPause waits a random 1 to 20 ms, or until ctx ends.
func casPause(ctx context.Context) {
	t := time.NewTimer(time.Millisecond + rand.N(19*time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Secret is one signing secret of a subscription with its end, if it has
// one. It prints redacted; Text is the whole secret.
type Secret struct {
	Text      string     `json:"secret"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func (s Secret) String() string   { return "whsec_***" }
func (s Secret) GoString() string { return "registry.Secret{whsec_***}" }

// Entry is a subscription as stored, at one KV revision, with its secrets
// decrypted, newest first.
type Entry struct {
	Subscription subscription.Subscription
	// Health is how its deliveries fare, shared by every replica.
	Health Health
	// Revision is the KV revision the entry was read at: the ETag, and the
	// expected revision of a conditional change.
	Revision uint64
	secrets  []Secret
}

// Health is the delivery health of a subscription: what the circuit
// breaker and the DISABLE_AFTER rule decide by, kept in the record so that
// every dispatcher replica acts on the same state. It changes only at
// transitions (the first failure after a success, a pause, the first
// success after failures), never per attempt.
type Health struct {
	// FailingSince is when the current run of failures began; nil while
	// deliveries succeed.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// PausedUntil is when the breaker's pause ends, while the status is
	// paused.
	PausedUntil *time.Time `json:"paused_until,omitempty"`
	// Cooloff is the length of the breaker's last pause; the next one is
	// twice as long, up to the maximum. Zero when the breaker is closed.
	Cooloff time.Duration `json:"cooloff,omitempty"`
}

// Secrets returns the secrets that sign at now, newest first.
func (e Entry) Secrets(now time.Time) []Secret {
	out := make([]Secret, 0, len(e.secrets))
	for _, s := range e.secrets {
		if s.ExpiresAt == nil || now.Before(*s.ExpiresAt) {
			out = append(out, s)
		}
	}
	return out
}

// SigningSecrets returns the secrets that sign a webhook sent at now,
// newest first, ready for webhook.Sign. A secret that expires during a
// grace period stops signing at that instant, without a write to KV.
func (e Entry) SigningSecrets(now time.Time) []webhook.Secret {
	var out []webhook.Secret
	for _, s := range e.Secrets(now) {
		// Every stored secret was parsed before it was stored.
		if ws, err := webhook.ParseSecret(s.Text); err == nil {
			out = append(out, ws)
		}
	}
	return out
}

// Filters returns the ORDERS subject filters of the subscription's event
// types: the FilterSubjects of its consumer.
func (e Entry) Filters() []string { return e.Subscription.Filters() }

// record is the stored JSON: the subscription and its sealed secrets.
type record struct {
	subscription.Subscription
	Secrets []sealedSecret `json:"secrets"`
	Health  Health         `json:"health"`
}

// sealedSecret is a secret as stored: encrypted, with its times in the
// clear so that expiry needs no key.
type sealedSecret struct {
	Ciphertext string     `json:"ciphertext"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// Options tune a Registry; the zero value is what production runs.
type Options struct {
	// Now returns the current time; nil means subscription.Now. Tests set
	// it to step through grace periods without sleeping.
	Now func() time.Time
	// RewatchWait is the pause before Watch restarts a watch that ended;
	// zero means one second.
	RewatchWait time.Duration
}

// Registry is the subscription store. It is safe for concurrent use.
type Registry struct {
	js       jetstream.JetStream
	replicas int
	sealer   *sealer
	log      *slog.Logger
	opts     Options
	kv       atomic.Pointer[kvHandle]
}

// kvHandle holds the bucket once provisioned; a pointer to a struct,
// because atomic.Pointer cannot hold an interface.
type kvHandle struct{ kv jetstream.KeyValue }

// New returns a Registry on js that seals secrets under key. It touches
// NATS only in Provision; until that succeeded, every call fails with
// ErrUnavailable.
func New(js jetstream.JetStream, key [32]byte, replicas int, logger *slog.Logger, opts Options) (*Registry, error) {
	s, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = subscription.Now
	}
	if opts.RewatchWait <= 0 {
		opts.RewatchWait = time.Second
	}
	return &Registry{js: js, replicas: replicas, sealer: s, log: logger, opts: opts}, nil
}

// Provision creates or updates the bucket. It is safe to call at every
// start, from every replica.
func (r *Registry) Provision(ctx context.Context) error {
	kv, err := r.js.CreateOrUpdateKeyValue(ctx, natsx.SubscriptionsBucket(r.replicas))
	if err != nil {
		return fmt.Errorf("provision KV bucket %s: %w", natsx.BucketSubscriptions, err)
	}
	r.kv.Store(&kvHandle{kv: kv})
	return nil
}

// Ready reports whether Provision has succeeded.
func (r *Registry) Ready() bool { return r.kv.Load() != nil }

func (r *Registry) bucket() (jetstream.KeyValue, error) {
	h := r.kv.Load()
	if h == nil {
		return nil, fmt.Errorf("%w: bucket %s not provisioned yet", ErrUnavailable, natsx.BucketSubscriptions)
	}
	return h.kv, nil
}

// unavailable marks a NATS failure as retryable, keeping its cause.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// Create stores a new enabled subscription with the fields given and a
// fresh signing secret, and returns it with the secret's text, which the
// caller shows once.
func (r *Registry) Create(ctx context.Context, f subscription.Fields) (Entry, string, error) {
	kv, err := r.bucket()
	if err != nil {
		return Entry{}, "", err
	}
	id, err := subscription.NewID()
	if err != nil {
		return Entry{}, "", err
	}
	secret, err := webhook.GenerateSecret()
	if err != nil {
		return Entry{}, "", err
	}
	now := r.opts.Now()
	rec := record{Subscription: subscription.New(id, f, now)}
	if err := r.addSecret(&rec, secret, now); err != nil {
		return Entry{}, "", err
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return Entry{}, "", err
	}
	rev, err := kv.Create(ctx, id, data)
	if err != nil {
		return Entry{}, "", unavailable("create "+id, err)
	}
	e, err := r.entry(rec, rev)
	return e, secret, err
}

// Get returns the subscription id at its latest revision.
func (r *Registry) Get(ctx context.Context, id string) (Entry, error) {
	e, _, err := r.get(ctx, id)
	return e, err
}

func (r *Registry) get(ctx context.Context, id string) (Entry, record, error) {
	if !subscription.ValidID(id) {
		return Entry{}, record{}, ErrNotFound
	}
	kv, err := r.bucket()
	if err != nil {
		return Entry{}, record{}, err
	}
	kve, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Entry{}, record{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, record{}, unavailable("get "+id, err)
	}
	rec, err := decodeRecord(id, kve.Value())
	if err != nil {
		return Entry{}, record{}, err
	}
	e, err := r.entry(rec, kve.Revision())
	return e, rec, err
}

func decodeRecord(key string, value []byte) (record, error) {
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil {
		return record{}, fmt.Errorf("subscription %s: stored value is not a subscription: %w", key, err)
	}
	if rec.ID != key {
		return record{}, fmt.Errorf("subscription %s: stored value names id %q", key, rec.ID)
	}
	if rec.EventTypes == nil {
		rec.EventTypes = []string{}
	}
	if rec.Metadata == nil {
		rec.Metadata = map[string]string{}
	}
	return rec, nil
}

// entry decrypts rec's secrets into an Entry at revision rev.
func (r *Registry) entry(rec record, rev uint64) (Entry, error) {
	e := Entry{Subscription: rec.Subscription, Health: rec.Health, Revision: rev}
	for _, s := range rec.Secrets {
		text, err := r.sealer.open(rec.ID, s.Ciphertext)
		if err != nil {
			return Entry{}, fmt.Errorf("subscription %s: %w", rec.ID, err)
		}
		e.secrets = append(e.secrets, Secret{Text: text, ExpiresAt: s.ExpiresAt})
	}
	return e, nil
}

// List returns up to limit subscriptions in id order (oldest first), those
// with an id after the cursor after ("" from the start), and whether more
// follow.
func (r *Registry) List(ctx context.Context, after string, limit int) ([]Entry, bool, error) {
	kv, err := r.bucket()
	if err != nil {
		return nil, false, err
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []Entry{}, false, nil
	}
	if err != nil {
		return nil, false, unavailable("list keys", err)
	}
	// Keys returns what it got when its context ends mid-way; a list cut
	// short must not pass for the whole.
	if ctx.Err() != nil {
		return nil, false, unavailable("list keys", ctx.Err())
	}
	sort.Strings(keys)
	i, _ := slices.BinarySearch(keys, after)
	if i < len(keys) && keys[i] == after {
		i++
	}
	out := []Entry{}
	for ; i < len(keys) && len(out) < limit; i++ {
		e, err := r.Get(ctx, keys[i])
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the keys were listed
		}
		if err != nil {
			return nil, false, err
		}
		out = append(out, e)
	}
	return out, i < len(keys), nil
}

// change reads id, lets fn change the record at now, and writes it back
// when fn reports a change, expecting the revision read. With ifRevision
// set, the record must be at that revision (else ErrStale); without, a lost
// race is retried on a fresh read. Expired secrets are dropped on every
// write.
func (r *Registry) change(ctx context.Context, id string, ifRevision uint64, fn func(rec *record, now time.Time) (bool, error)) (Entry, bool, error) {
	kv, err := r.bucket()
	if err != nil {
		return Entry{}, false, err
	}
	for range casAttempts {
		e, rec, err := r.get(ctx, id)
		if err != nil {
			return Entry{}, false, err
		}
		if ifRevision != 0 && e.Revision != ifRevision {
			return Entry{}, false, ErrStale
		}
		now := r.opts.Now()
		changed, err := fn(&rec, now)
		if err != nil {
			return Entry{}, false, err
		}
		if !changed {
			return e, false, nil
		}
		rec.Secrets = slices.DeleteFunc(rec.Secrets, func(s sealedSecret) bool {
			return s.ExpiresAt != nil && !now.Before(*s.ExpiresAt)
		})
		data, err := json.Marshal(rec)
		if err != nil {
			return Entry{}, false, err
		}
		rev, err := kv.Update(ctx, id, data, e.Revision)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if ifRevision != 0 {
				return Entry{}, false, ErrStale
			}
			casPause(ctx)
			continue
		}
		if err != nil {
			return Entry{}, false, unavailable("update "+id, err)
		}
		ne, err := r.entry(rec, rev)
		return ne, true, err
	}
	return Entry{}, false, unavailable("update "+id, errors.New("too many concurrent changes"))
}

// Update sets the fields given; ifRevision, when not 0, is the revision
// the caller read (If-Match).
func (r *Registry) Update(ctx context.Context, id string, ifRevision uint64, f subscription.Fields) (Entry, error) {
	e, _, err := r.change(ctx, id, ifRevision, func(rec *record, now time.Time) (bool, error) {
		return rec.Apply(f, now), nil
	})
	return e, err
}

// SetStatus sets the status of a subscription, with the reason when it is
// disabled, and reports whether it changed, so that the caller announces
// only real transitions. The admin API's enable and disable, the circuit
// breaker and the 410 handling all come through here. ifRevision is as for
// Update.
func (r *Registry) SetStatus(ctx context.Context, id string, ifRevision uint64, status subscription.Status, reason subscription.Reason) (Entry, bool, error) {
	switch {
	case status == subscription.StatusDisabled && !subscription.ValidReason(reason):
		return Entry{}, false, fmt.Errorf("%w: disabling needs a reason of manual, gone or failing, not %q", ErrInvalid, reason)
	case status != subscription.StatusDisabled && reason != "":
		return Entry{}, false, fmt.Errorf("%w: only a disabled subscription has a reason", ErrInvalid)
	case status != subscription.StatusEnabled && status != subscription.StatusPaused && status != subscription.StatusDisabled:
		return Entry{}, false, fmt.Errorf("%w: unknown status %q", ErrInvalid, status)
	}
	return r.change(ctx, id, ifRevision, func(rec *record, now time.Time) (bool, error) {
		changed := rec.SetStatus(status, reason, now)
		// Enabled by hand, a subscription starts afresh: the breaker
		// closed, no run of failures counting towards DISABLE_AFTER.
		if status == subscription.StatusEnabled && rec.Health != (Health{}) {
			rec.Health, changed = Health{}, true
		}
		return changed, nil
	})
}

// ChangeHealth lets fn change a subscription's status and health at now,
// and stores the result when fn reports a change; a lost race is retried
// on a fresh read, so fn sees the state another replica may just have
// written and decides again. It is how the dispatcher opens and closes a
// circuit breaker and disables a failing or gone endpoint.
func (r *Registry) ChangeHealth(ctx context.Context, id string, fn func(s *subscription.Subscription, h *Health, now time.Time) bool) (Entry, bool, error) {
	return r.change(ctx, id, 0, func(rec *record, now time.Time) (bool, error) {
		return fn(&rec.Subscription, &rec.Health, now), nil
	})
}

// Delete removes a subscription and every trace of its secrets (a purge,
// which leaves no older revision behind). ifRevision is as for Update.
func (r *Registry) Delete(ctx context.Context, id string, ifRevision uint64) error {
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	for range casAttempts {
		e, _, err := r.get(ctx, id)
		if err != nil {
			return err
		}
		if ifRevision != 0 && e.Revision != ifRevision {
			return ErrStale
		}
		err = kv.Purge(ctx, id, jetstream.LastRevision(e.Revision))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if ifRevision != 0 {
				return ErrStale
			}
			casPause(ctx)
			continue
		}
		if err != nil {
			return unavailable("delete "+id, err)
		}
		return nil
	}
	return unavailable("delete "+id, errors.New("too many concurrent changes"))
}

// Rotate gives a subscription a new secret, newest first, and returns its
// text. Every older secret keeps signing until grace from now (or until
// its own earlier end); a grace of 0 retires them at once, for a leaked
// secret. ifRevision is as for Update.
func (r *Registry) Rotate(ctx context.Context, id string, ifRevision uint64, grace time.Duration) (Entry, string, error) {
	if grace < 0 || grace > MaxGrace {
		return Entry{}, "", fmt.Errorf("%w: grace must be between 0s and %s", ErrInvalid, MaxGrace)
	}
	secret, err := webhook.GenerateSecret()
	if err != nil {
		return Entry{}, "", err
	}
	e, _, err := r.change(ctx, id, ifRevision, func(rec *record, now time.Time) (bool, error) {
		end := now.Add(grace)
		kept := rec.Secrets[:0]
		for _, s := range rec.Secrets {
			if s.ExpiresAt != nil && !now.Before(*s.ExpiresAt) {
				continue
			}
			if s.ExpiresAt == nil || end.Before(*s.ExpiresAt) {
				s.ExpiresAt = &end
			}
			if grace > 0 {
				kept = append(kept, s)
			}
		}
		if len(kept)+1 > MaxSecrets {
			return false, ErrTooManySecrets
		}
		rec.Secrets = kept
		rec.UpdatedAt = now
		return true, r.addSecret(rec, secret, now)
	})
	if err != nil {
		return Entry{}, "", err
	}
	return e, secret, nil
}

// addSecret seals text as rec's newest secret, without an end.
func (r *Registry) addSecret(rec *record, text string, now time.Time) error {
	sealed, err := r.sealer.seal(rec.ID, text)
	if err != nil {
		return err
	}
	rec.Secrets = append([]sealedSecret{{Ciphertext: sealed, CreatedAt: now}}, rec.Secrets...)
	return nil
}

// SigningSecrets returns the secrets that sign subscription id's webhooks
// now, newest first.
func (r *Registry) SigningSecrets(ctx context.Context, id string) ([]webhook.Secret, error) {
	e, err := r.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return e.SigningSecrets(r.opts.Now()), nil
}
