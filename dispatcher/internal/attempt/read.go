package attempt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/history"
	"github.com/jethook/jethook/shared/natsx"
)

// ErrUnavailable means the attempt log could not be read: NATS did not
// answer, or DELIVERY_ATTEMPTS does not exist yet. The read may be
// retried.
var ErrUnavailable = errors.New("the attempt log is unavailable")

// Query selects attempts, newest first.
type Query struct {
	// SubscriptionID and EventID narrow the attempts to one subscription,
	// one event, or one event of one subscription; at least one is set.
	SubscriptionID, EventID string
	// Outcome, when set, keeps only the attempts with this outcome.
	Outcome string
	// Before and Limit page through the log: see history.Query.
	Before uint64
	Limit  int
}

// Filter is the DELIVERY_ATTEMPTS subject filter of q.
func (q Query) Filter() string {
	switch {
	case q.EventID == "":
		return natsx.AttemptFilter(q.SubscriptionID)
	case q.SubscriptionID == "":
		return natsx.EventAttemptFilter(q.EventID)
	}
	return natsx.AttemptSubject(q.SubscriptionID, q.EventID)
}

// Page is one page of attempts, newest first.
type Page struct {
	Records []Record
	// Next is the Before of the following page, or 0 at the end.
	Next uint64
}

// Read returns one page of the attempts q selects. A message that is not
// an attempt record (someone else published on attempts.>) is passed
// over.
func Read(ctx context.Context, js jetstream.JetStream, q Query) (Page, error) {
	if q.SubscriptionID == "" && q.EventID == "" {
		return Page{}, errors.New("attempt: a query names a subscription, an event or both")
	}
	s, err := js.Stream(ctx, natsx.StreamAttempts)
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	decoded := map[uint64]Record{}
	p, err := history.Newest(ctx, s, history.Query{
		Filter: q.Filter(),
		Before: q.Before,
		Limit:  q.Limit,
		Keep: func(m *jetstream.RawStreamMsg) bool {
			var r Record
			if json.Unmarshal(m.Data, &r) != nil || (q.Outcome != "" && r.Outcome != q.Outcome) {
				return false
			}
			decoded[m.Sequence] = r
			return true
		},
	})
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out := Page{Records: make([]Record, 0, len(p.Msgs)), Next: p.Next}
	for _, m := range p.Msgs {
		out.Records = append(out.Records, decoded[m.Sequence])
	}
	return out, nil
}

// ValidOutcome reports whether o is an outcome an attempt can have.
func ValidOutcome(o string) bool {
	switch o {
	case OutcomeDelivered, OutcomeRetry, OutcomeDeadLettered, OutcomeFailed:
		return true
	}
	return false
}

// MaxEventIDLen is the longest event id an attempt subject carries, as
// Standard Webhooks receivers accept for a webhook-id.
const MaxEventIDLen = 256

// ValidEventID reports whether id can be the event token of an attempt's
// subject (and of a redelivery's): printable ASCII without the characters
// that split or widen a NATS subject.
func ValidEventID(id string) bool {
	if id == "" || len(id) > MaxEventIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}

// BodyEventID is the "id" of an event body, or "" when it has none that
// ValidEventID accepts.
func BodyEventID(body []byte) string {
	var head struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &head) != nil || !ValidEventID(head.ID) {
		return ""
	}
	return head.ID
}

// Reader reads the attempt log on one connection, for whoever holds it
// as an interface.
type Reader struct{ JS jetstream.JetStream }

// Read is Read on r's connection.
func (r Reader) Read(ctx context.Context, q Query) (Page, error) { return Read(ctx, r.JS, q) }
