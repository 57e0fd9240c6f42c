package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/webhook"
)

// Fixed is a subscription that configuration, not the API, defines: the
// dispatcher ensures it at every start.
type Fixed struct {
	ID          string
	URL         string
	EventTypes  []string
	Description string
	// Secrets are the signing secrets as configured ("whsec_…"), used as
	// given rather than generated, so that a receiver configured with
	// the same value verifies.
	Secrets []string
	// MaxInFlight, when not 0, is the subscription's max_in_flight as
	// configured; RateLimitPerS, when not 0, its rate limit at creation.
	MaxInFlight, RateLimitPerS int
}

// Notifier is the fixed subscription of NOTIFICATION_WEBHOOK_URL, signed
// with the WEBHOOK_SECRET entries, for order.paid, with inFlight webhooks
// in flight at most (DISPATCH_CONCURRENCY). It is the pipeline's own
// receiver, so its rate is bounded only by the highest limit there is.
func Notifier(url string, secrets []string, inFlight int) Fixed {
	return Fixed{
		ID:            subscription.NotifierID,
		URL:           url,
		EventTypes:    []string{"order.paid"},
		Description:   "the notifier, from NOTIFICATION_WEBHOOK_URL",
		Secrets:       secrets,
		MaxInFlight:   inFlight,
		RateLimitPerS: subscription.MaxRateLimitPerS,
	}
}

// EnsureOutcome says what Ensure did.
type EnsureOutcome string

// The outcomes of Ensure.
const (
	EnsureCreated   EnsureOutcome = "created"
	EnsureUpdated   EnsureOutcome = "updated"
	EnsureUnchanged EnsureOutcome = "unchanged"
)

// Ensure makes the fixed subscription exist with its URL and exactly its
// secrets. It creates it (enabled, for its event types, with default
// limits) when missing, and when the URL or the secrets in the
// configuration differ from the stored ones, it sets them, retiring any
// other secret at once. Everything else, status included, stays as the
// API left it: an operator who disabled it keeps it disabled. Idempotent,
// and safe when several replicas start at once.
func (r *Registry) Ensure(ctx context.Context, f Fixed) (Entry, EnsureOutcome, error) {
	if err := f.validate(); err != nil {
		return Entry{}, "", err
	}
	kv, err := r.bucket()
	if err != nil {
		return Entry{}, "", err
	}
	for range casAttempts {
		e, err := r.Get(ctx, f.ID)
		if errors.Is(err, ErrNotFound) {
			e, err := r.createFixed(ctx, kv, f)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another replica was first
			}
			return e, EnsureCreated, err
		}
		if err != nil {
			return Entry{}, "", err
		}
		sameLimit := f.MaxInFlight == 0 || e.Subscription.MaxInFlight == f.MaxInFlight
		if e.Subscription.URL == f.URL && sameLimit && sameTexts(e.Secrets(r.opts.Now()), f.Secrets) {
			return e, EnsureUnchanged, nil
		}
		ne, _, err := r.change(ctx, f.ID, e.Revision, func(rec *record, now time.Time) (bool, error) {
			rec.URL = f.URL
			if f.MaxInFlight != 0 {
				rec.MaxInFlight = f.MaxInFlight
			}
			rec.UpdatedAt = now
			rec.Secrets = nil
			return true, r.addSecrets(rec, f.Secrets, now)
		})
		if errors.Is(err, ErrStale) {
			casPause(ctx)
			continue
		}
		return ne, EnsureUpdated, err
	}
	return Entry{}, "", unavailable("ensure "+f.ID, errors.New("too many concurrent changes"))
}

func (f Fixed) validate() error {
	if !subscription.ValidID(f.ID) {
		return fmt.Errorf("%w: fixed subscription id %q", ErrInvalid, f.ID)
	}
	if len(f.Secrets) == 0 || len(f.Secrets) > MaxSecrets {
		return fmt.Errorf("%w: %s needs 1 to %d secrets", ErrInvalid, f.ID, MaxSecrets)
	}
	for i, s := range f.Secrets {
		if _, err := webhook.ParseSecret(s); err != nil {
			return fmt.Errorf("%w: %s secret %d: %w", ErrInvalid, f.ID, i+1, err)
		}
	}
	if f.MaxInFlight < 0 || f.MaxInFlight > subscription.MaxMaxInFlight || f.RateLimitPerS < 0 || f.RateLimitPerS > subscription.MaxRateLimitPerS {
		return fmt.Errorf("%w: %s: max_in_flight or rate_limit_per_s out of bounds", ErrInvalid, f.ID)
	}
	for _, t := range f.EventTypes {
		if !subscription.KnownEventType(t) {
			return fmt.Errorf("%w: %s: unknown event type %q", ErrInvalid, f.ID, t)
		}
	}
	return nil
}

func (r *Registry) createFixed(ctx context.Context, kv jetstream.KeyValue, f Fixed) (Entry, error) {
	now := r.opts.Now()
	types := slices.Clone(f.EventTypes)
	fields := subscription.Fields{URL: &f.URL, EventTypes: &types, Description: &f.Description}
	if f.MaxInFlight != 0 {
		fields.MaxInFlight = &f.MaxInFlight
	}
	if f.RateLimitPerS != 0 {
		fields.RateLimitPerS = &f.RateLimitPerS
	}
	rec := record{Subscription: subscription.New(f.ID, fields, now)}
	if err := r.addSecrets(&rec, f.Secrets, now); err != nil {
		return Entry{}, err
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return Entry{}, err
	}
	rev, err := kv.Create(ctx, f.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return Entry{}, err
	}
	if err != nil {
		return Entry{}, unavailable("create "+f.ID, err)
	}
	return r.entry(rec, rev)
}

// addSecrets seals texts, in their order, as rec's only secrets.
func (r *Registry) addSecrets(rec *record, texts []string, now time.Time) error {
	for _, t := range slices.Backward(texts) {
		if err := r.addSecret(rec, t, now); err != nil {
			return err
		}
	}
	return nil
}

// sameTexts reports whether the secrets signing now are exactly texts, in
// any order.
func sameTexts(have []Secret, texts []string) bool {
	if len(have) != len(texts) {
		return false
	}
	for _, s := range have {
		if s.ExpiresAt != nil || !slices.Contains(texts, s.Text) {
			return false
		}
	}
	return true
}
