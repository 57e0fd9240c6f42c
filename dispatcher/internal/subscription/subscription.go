package subscription

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// IDPrefix starts every subscription id.
const IDPrefix = "sub_"

// NotifierID is the fixed subscription the dispatcher keeps pointed at
// NOTIFICATION_WEBHOOK_URL, so that a deployment without any API call
// still delivers order.paid to the notifier.
const NotifierID = "sub_notifier"

// Status says whether a subscription's events are being delivered.
type Status string

// The statuses of the contract.
const (
	// StatusEnabled delivers events.
	StatusEnabled Status = "enabled"
	// StatusPaused holds events back for a while: the circuit breaker is
	// open. Events wait in ORDERS.
	StatusPaused Status = "paused"
	// StatusDisabled delivers nothing until the subscription is enabled
	// again; DisabledReason says why.
	StatusDisabled Status = "disabled"
)

// Reason says why a subscription is disabled.
type Reason string

// The reasons of the contract.
const (
	// ReasonManual: an operator disabled it through the API.
	ReasonManual Reason = "manual"
	// ReasonGone: the endpoint answered 410 Gone.
	ReasonGone Reason = "gone"
	// ReasonFailing: the endpoint had no success for DISABLE_AFTER.
	ReasonFailing Reason = "failing"
)

// ValidReason reports whether r is one of the reasons of the contract.
func ValidReason(r Reason) bool {
	return r == ReasonManual || r == ReasonGone || r == ReasonFailing
}

// Defaults and bounds of the writable fields.
const (
	// DefaultRateLimitPerS is what a subscription may receive per second
	// from one dispatcher process when it names no limit: far above what
	// a single shop sends, low enough that a backlog replayed after an
	// outage does not flatten a small receiver.
	DefaultRateLimitPerS = 100
	MaxRateLimitPerS     = 10_000
	// DefaultMaxInFlight is how many attempts may be open at once: enough
	// to keep a receiver that answers in 100 ms busy at the default rate.
	DefaultMaxInFlight = 10
	MaxMaxInFlight     = 256

	MaxDescriptionLen   = 500 // characters
	MaxMetadataKeys     = 50
	MaxMetadataKeyLen   = 40  // characters
	MaxMetadataValueLen = 500 // characters
)

// AllTypes selects every event type, present and future.
const AllTypes = "*"

// eventSubjects maps each event type a subscription may name to the ORDERS
// subjects that carry it.
var eventSubjects = map[string]string{
	"order.paid": "orders.paid.>",
	AllTypes:     "orders.>",
}

// EventTypes returns the event types a subscription may name, sorted.
func EventTypes() []string {
	types := make([]string, 0, len(eventSubjects))
	for t := range eventSubjects {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// KnownEventType reports whether t may be named in event_types.
func KnownEventType(t string) bool {
	_, ok := eventSubjects[t]
	return ok
}

// Filters returns the ORDERS subject filters of event types, in their
// order: the FilterSubjects of the subscription's consumer. Unknown types
// are skipped; a subscription holds none.
func Filters(types []string) []string {
	out := make([]string, 0, len(types))
	for _, t := range types {
		if s, ok := eventSubjects[t]; ok {
			out = append(out, s)
		}
	}
	return out
}

// Subscription is one webhook endpoint and what it receives. Its secrets
// are not part of it: they are kept, encrypted, by the registry, and
// shown only where the contract says.
type Subscription struct {
	ID             string            `json:"id"`
	URL            string            `json:"url"`
	EventTypes     []string          `json:"event_types"`
	Description    string            `json:"description"`
	Status         Status            `json:"status"`
	DisabledReason Reason            `json:"disabled_reason,omitempty"`
	RateLimitPerS  int               `json:"rate_limit_per_s"`
	MaxInFlight    int               `json:"max_in_flight"`
	Metadata       map[string]string `json:"metadata"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
}

// Filters returns the subject filters of the subscription's event types.
func (s Subscription) Filters() []string { return Filters(s.EventTypes) }

// NewID returns a fresh id: "sub_" and a UUIDv7, so that ids sort by
// creation time and listing by id lists oldest first.
func NewID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("subscription id: %w", err)
	}
	return IDPrefix + u.String(), nil
}

// ValidID reports whether id is a subscription id: NotifierID, or "sub_"
// and a canonical lower-case UUIDv7. Such an id is also a valid KV key and
// NATS subject token, so a path parameter that passes can be used as one.
func ValidID(id string) bool {
	if id == NotifierID {
		return true
	}
	rest, ok := strings.CutPrefix(id, IDPrefix)
	if !ok || len(rest) != 36 {
		return false
	}
	u, err := uuid.Parse(rest)
	return err == nil && u.String() == rest && u.Version() == 7
}

// Now is the time as subscriptions record it: UTC, in milliseconds.
func Now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// New returns an enabled subscription with id and the fields given, the
// defaults filling in what f leaves out.
func New(id string, f Fields, now time.Time) Subscription {
	s := Subscription{
		ID:            id,
		EventTypes:    []string{},
		Status:        StatusEnabled,
		RateLimitPerS: DefaultRateLimitPerS,
		MaxInFlight:   DefaultMaxInFlight,
		Metadata:      map[string]string{},
		CreatedAt:     now,
		UpdatedAt:     now,
	}
	s.Apply(f, now)
	return s
}

// Apply sets the fields f holds and reports whether anything changed;
// only then is UpdatedAt set to now.
func (s *Subscription) Apply(f Fields, now time.Time) bool {
	before := s.clone()
	if f.URL != nil {
		s.URL = *f.URL
	}
	if f.EventTypes != nil {
		s.EventTypes = slices.Clone(*f.EventTypes)
	}
	if f.Description != nil {
		s.Description = *f.Description
	}
	if f.RateLimitPerS != nil {
		s.RateLimitPerS = *f.RateLimitPerS
	}
	if f.MaxInFlight != nil {
		s.MaxInFlight = *f.MaxInFlight
	}
	if f.Metadata != nil {
		s.Metadata = cloneMap(*f.Metadata)
	}
	if s.Equal(before) {
		return false
	}
	s.UpdatedAt = now
	return true
}

// SetStatus sets the status and its reason, which only a disabled
// subscription has, and reports whether anything changed.
func (s *Subscription) SetStatus(status Status, reason Reason, now time.Time) bool {
	if status != StatusDisabled {
		reason = ""
	}
	if s.Status == status && s.DisabledReason == reason {
		return false
	}
	s.Status, s.DisabledReason, s.UpdatedAt = status, reason, now
	return true
}

// Equal reports whether s and o hold the same values.
func (s Subscription) Equal(o Subscription) bool {
	return s.ID == o.ID && s.URL == o.URL && slices.Equal(s.EventTypes, o.EventTypes) &&
		s.Description == o.Description && s.Status == o.Status && s.DisabledReason == o.DisabledReason &&
		s.RateLimitPerS == o.RateLimitPerS && s.MaxInFlight == o.MaxInFlight &&
		maps.Equal(s.Metadata, o.Metadata) && s.CreatedAt.Equal(o.CreatedAt) && s.UpdatedAt.Equal(o.UpdatedAt)
}

func (s Subscription) clone() Subscription {
	c := s
	c.EventTypes = slices.Clone(s.EventTypes)
	c.Metadata = cloneMap(s.Metadata)
	return c
}

// cloneMap copies m, never returning nil, so that metadata is always
// shown as an object.
func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}
