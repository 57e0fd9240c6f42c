package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/jobs"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/problem"
)

// Jobs makes and reports recovery jobs.
type Jobs interface {
	Start(ctx context.Context, sub subscription.Subscription, since, until time.Time) (jobs.Job, error)
	Status(ctx context.Context, id string) (jobs.Status, error)
}

var _ Jobs = (*jobs.Manager)(nil)

// Pinger sends a subscription's endpoint a signed webhook.test now.
type Pinger interface {
	Ping(ctx context.Context, e registry.Entry) (attempt.Record, error)
}

// MaxReplayIDs bounds the event ids one replay request names.
const MaxReplayIDs = 1000

type replayed struct {
	Replayed int `json:"replayed"`
}

type jobCreated struct {
	JobID string `json:"job_id"`
}

func (h *handler) replay(c *fiber.Ctx) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	b, err := body(c, false)
	if err != nil {
		return err
	}
	raw, err := subscription.DecodeObjectWith(b, "event_ids")
	if err != nil {
		return problem.FromDecode(err)
	}
	var eventIDs []string
	if v, ok := raw["event_ids"]; ok {
		if eventIDs, err = decodeEventIDs(v); err != nil {
			return err
		}
	}
	if _, err := h.lookup(c); err != nil {
		return err
	}
	// The replay runs as long as it takes, each round against NATS
	// bounded on its own; a client that goes away does not stop it
	// half-way.
	n, err := h.DeadLetters.Replay(context.WithoutCancel(c.UserContext()), id, eventIDs)
	if err != nil {
		return h.unavailable(c, err, "the dead letters")
	}
	return c.Status(http.StatusAccepted).JSON(replayed{Replayed: n})
}

// decodeEventIDs reads a replay's event_ids: a non-empty array of event
// ids.
func decodeEventIDs(v json.RawMessage) ([]string, error) {
	var ids []string
	msg := fmt.Sprintf("must be an array of 1 to %d event ids; send {} to replay every dead letter", MaxReplayIDs)
	if len(v) == 0 || v[0] != '[' || json.Unmarshal(v, &ids) != nil || len(ids) == 0 || len(ids) > MaxReplayIDs {
		return nil, problem.Invalid(map[string]string{"event_ids": msg})
	}
	for i, id := range ids {
		if !attempt.ValidEventID(id) {
			return nil, problem.Invalid(map[string]string{"event_ids": fmt.Sprintf(
				"item %d is not an event id: printable ASCII without spaces, dots, * or >, at most %d bytes", i, attempt.MaxEventIDLen)})
		}
	}
	return ids, nil
}

func (h *handler) recoverRange(c *fiber.Ctx) error {
	if _, err := subscriptionID(c); err != nil {
		return err
	}
	b, err := body(c, false)
	if err != nil {
		return err
	}
	raw, err := subscription.DecodeObjectWith(b, "since", "until")
	if err != nil {
		return problem.FromDecode(err)
	}
	errs := map[string]string{}
	since, ok := decodeTime(raw, "since", true, errs)
	until, _ := decodeTime(raw, "until", false, errs)
	if !ok || len(errs) > 0 {
		return problem.Invalid(errs)
	}
	e, err := h.lookup(c)
	if err != nil {
		return err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	j, err := h.Jobs.Start(ctx, e.Subscription, since, until)
	var invalid *jobs.InvalidError
	if errors.As(err, &invalid) {
		return problem.Invalid(invalid.Fields)
	}
	if err != nil {
		return h.unavailable(c, err, "the recovery jobs")
	}
	metrics.Annotate(c, "job_id", j.ID)
	c.Location(Prefix + "/jobs/" + j.ID)
	return c.Status(http.StatusAccepted).JSON(jobCreated{JobID: j.ID})
}

// decodeTime reads field as an RFC 3339 time string; ok is false when it
// is required and absent. null counts as absent.
func decodeTime(raw map[string]json.RawMessage, field string, required bool, errs map[string]string) (time.Time, bool) {
	v, ok := raw[field]
	if !ok || string(v) == "null" {
		if required {
			errs[field] = "is required: an RFC 3339 time such as 2026-11-28T10:00:00Z"
		}
		return time.Time{}, !required
	}
	var s string
	if v[0] != '"' || json.Unmarshal(v, &s) != nil {
		errs[field] = "must be an RFC 3339 time string such as 2026-11-28T10:00:00Z"
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		errs[field] = "must be an RFC 3339 time string such as 2026-11-28T10:00:00Z"
		return time.Time{}, false
	}
	return t, true
}

func (h *handler) job(c *fiber.Ctx) error {
	id := strings.Clone(c.Params("job_id"))
	if !jobs.ValidID(id) {
		return problem.New(http.StatusNotFound, "no job with this id")
	}
	metrics.Annotate(c, "job_id", id)
	ctx, cancel := h.ctx(c)
	defer cancel()
	s, err := h.Jobs.Status(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no job with this id")
	}
	if err != nil {
		return h.unavailable(c, err, "the recovery jobs")
	}
	return c.JSON(s)
}

func (h *handler) ping(c *fiber.Ctx) error {
	if _, err := optionalObject(c); err != nil {
		return err
	}
	e, err := h.lookup(c)
	if err != nil {
		return err
	}
	// The attempt is bounded by the client's own timeout (HTTP_TIMEOUT).
	rec, err := h.Pinger.Ping(c.UserContext(), e)
	if err != nil {
		return err
	}
	return c.Status(http.StatusAccepted).JSON(viewAttempt(rec))
}
