package jobs

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The states of a job.
const (
	// StateRunning: the job is enqueueing its events.
	StateRunning = "running"
	// StateDone: every matching event of the range is enqueued; Delivered
	// goes on counting as the redeliveries go out.
	StateDone = "done"
	// StateFailed: the job stopped for good; Error says why.
	StateFailed = "failed"
)

// IDPrefix starts every job id.
const IDPrefix = "job_"

// Errors of the package; compare with errors.Is.
var (
	// ErrNotFound: no job has this id (or its record aged out).
	ErrNotFound = errors.New("no job with this id")
	// ErrUnavailable: NATS did not answer, or the jobs bucket or ORDERS
	// does not exist yet; the call may be retried.
	ErrUnavailable = errors.New("the recovery jobs are unavailable")
)

// InvalidError names the fields of a request that a job cannot be made
// of, field → message.
type InvalidError struct{ Fields map[string]string }

func (e *InvalidError) Error() string {
	var parts []string
	for f, m := range e.Fields {
		parts = append(parts, f+" "+m)
	}
	return "invalid recovery: " + strings.Join(parts, "; ")
}

// NewID returns a fresh job id: "job_" and a UUIDv7.
func NewID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("job id: %w", err)
	}
	return IDPrefix + u.String(), nil
}

// ValidID reports whether id is a job id: "job_" and a canonical
// lower-case UUIDv7, which is also a valid KV key and subject token.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, IDPrefix)
	if !ok || len(rest) != 36 {
		return false
	}
	u, err := uuid.Parse(rest)
	return err == nil && u.String() == rest && u.Version() == 7
}

// Job is a recovery job as its record in the jobs bucket holds it, key =
// its id.
type Job struct {
	ID             string    `json:"job_id"`
	SubscriptionID string    `json:"subscription_id"`
	State          string    `json:"state"`
	Since          time.Time `json:"since"`
	Until          time.Time `json:"until"`
	// Filters are the ORDERS subjects of the subscription's event types
	// when the job was made.
	Filters []string `json:"filters"`
	// FirstSeq and LastSeq are the first and the last ORDERS sequence of
	// the range; LastSeq < FirstSeq for a range without events.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Position is the last ORDERS sequence up to which every matching
	// event is enqueued: where a job taken over goes on.
	Position uint64 `json:"position"`
	// Total is the number of matching events in the range: counted when
	// the job is made, and exact once it is done.
	Total int64 `json:"total"`
	// Enqueued is how many events up to Position are enqueued.
	Enqueued int64  `json:"enqueued"`
	Error    string `json:"error,omitempty"`
	// Owner names the replica running the job, which holds it until
	// LeaseUntil; another replica may take it over after that.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Status is a job as GET /v1/jobs/{job_id} answers it.
type Status struct {
	JobID          string    `json:"job_id"`
	SubscriptionID string    `json:"subscription_id"`
	State          string    `json:"state"`
	Since          time.Time `json:"since"`
	Until          time.Time `json:"until"`
	Total          int64     `json:"total"`
	Enqueued       int64     `json:"enqueued"`
	// Delivered counts the job's redeliveries that receivers answered
	// 2xx, a second or so behind; an event delivered twice (at least once
	// means that can happen) counts twice.
	Delivered int64     `json:"delivered"`
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (j Job) status(delivered int64) Status {
	return Status{
		JobID: j.ID, SubscriptionID: j.SubscriptionID, State: j.State, Since: j.Since, Until: j.Until,
		Total: j.Total, Enqueued: j.Enqueued, Delivered: delivered, Error: j.Error,
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
	}
}

// claimable reports whether a replica may take the job at now.
func (j Job) claimable(now time.Time) bool {
	return j.State == StateRunning && (j.Owner == "" || now.After(j.LeaseUntil))
}

// deliveredKey is the key of the job's delivered counter, beside its
// record: the counters of every replica add up there, and never contend
// with the writes of the replica running the job.
func deliveredKey(id string) string { return id + ".delivered" }
