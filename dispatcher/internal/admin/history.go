package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/deadletter"
	"github.com/jethook/jethook/dispatcher/internal/jobs"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/problem"
)

// Attempts reads the attempt log.
type Attempts interface {
	Read(ctx context.Context, q attempt.Query) (attempt.Page, error)
}

var _ Attempts = attempt.Reader{}

// DeadLetters reads and replays the subscriptions' dead letters.
type DeadLetters interface {
	Page(ctx context.Context, subID string, before uint64, limit int) (deadletter.Page, error)
	Replay(ctx context.Context, subID string, eventIDs []string) (int, error)
}

var _ DeadLetters = (*deadletter.Store)(nil)

// attemptView is an attempt as the API shows it: the record, with error
// and response always there (empty when there is none), so that every
// attempt has the same shape, and without the bookkeeping that lets a
// subscription's consumer resume. A shallower field of the same JSON name
// wins over the record's in encoding/json: the always-zero ones hide
// theirs (a field tagged "-" would not, it takes no part in the choice).
type attemptView struct {
	attempt.Record
	Error     string   `json:"error"`
	Response  string   `json:"response"`
	StreamSeq struct{} `json:"stream_seq,omitzero"`
	AckFloor  struct{} `json:"ack_floor,omitzero"`
	// MessageSeq, too, is the dispatcher's own bookkeeping.
	MessageSeq struct{} `json:"message_seq,omitzero"`
}

func viewAttempt(r attempt.Record) attemptView {
	return attemptView{Record: r, Error: r.Error, Response: r.Response}
}

// page is a list answer: {"data":[…],"next_cursor":…|null}.
type page[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// The kinds of sequence cursor, so that one list's cursor is refused by
// another.
const (
	cursorAttempts      = "attempts"
	cursorEventAttempts = "event-attempts"
	cursorDeadLetters   = "dead-letters"
)

// seqCursor is the next_cursor of a list read newest first: the stream
// sequence below which the next page starts, and the list's kind.
func seqCursor(kind string, seq uint64) *string {
	if seq == 0 {
		return nil
	}
	s := base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + strconv.FormatUint(seq, 10)))
	return &s
}

func decodeSeqCursor(kind, s string) (uint64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, false
	}
	rest, ok := strings.CutPrefix(string(b), kind+":")
	seq, err := strconv.ParseUint(rest, 10, 64)
	return seq, ok && err == nil && seq > 0 && strconv.FormatUint(seq, 10) == rest
}

// historyQuery reads ?limit= and ?cursor= of a list of kind, and the
// filters given.
func historyQuery(c *fiber.Ctx, kind string, filters ...string) (before uint64, n int, values map[string]string, errs map[string]string) {
	values, errs = query(c, append([]string{"limit", "cursor"}, filters...)...)
	n = limit(values, errs)
	if v, ok := values["cursor"]; ok {
		seq, ok := decodeSeqCursor(kind, v)
		if !ok {
			errs["cursor"] = "is not a next_cursor of this list"
		}
		before = seq
	}
	if v, ok := values["event_id"]; ok && !attempt.ValidEventID(v) {
		errs["event_id"] = "must be an event id such as evt_0193…: printable ASCII without spaces, dots, * or >"
	}
	if v, ok := values["outcome"]; ok && !attempt.ValidOutcome(v) {
		errs["outcome"] = "must be delivered, retry, dead_lettered or failed"
	}
	return before, n, values, errs
}

// known reports whether subscription id exists; false, without an error,
// when it was deleted (or never was): its attempts and dead letters stay
// readable until they age out.
func (h *handler) known(c *fiber.Ctx, id string) (bool, error) {
	ctx, cancel := h.ctx(c)
	defer cancel()
	_, err := h.Registry.Get(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, registryProblem(c, err)
	}
	return true, nil
}

func (h *handler) subscriptionAttempts(c *fiber.Ctx) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	before, n, values, errs := historyQuery(c, cursorAttempts, "event_id", "outcome")
	if len(errs) > 0 {
		return problem.Invalid(errs)
	}
	exists, err := h.known(c, id)
	if err != nil {
		return err
	}
	q := attempt.Query{SubscriptionID: id, EventID: values["event_id"], Outcome: values["outcome"], Before: before, Limit: n}
	return h.attempts(c, q, cursorAttempts, func(p attempt.Page) bool {
		return exists || before != 0 || len(p.Records) > 0
	})
}

func (h *handler) eventAttempts(c *fiber.Ctx) error {
	eventID := strings.Clone(c.Params("event_id"))
	if !attempt.ValidEventID(eventID) {
		return problem.New(http.StatusNotFound, "no event with this id")
	}
	metrics.Annotate(c, "event_id", eventID)
	before, n, values, errs := historyQuery(c, cursorEventAttempts, "outcome")
	if len(errs) > 0 {
		return problem.Invalid(errs)
	}
	q := attempt.Query{EventID: eventID, Outcome: values["outcome"], Before: before, Limit: n}
	return h.attempts(c, q, cursorEventAttempts, func(attempt.Page) bool { return true })
}

// attempts answers one page of q; found says whether the page may be
// shown, or is a 404.
func (h *handler) attempts(c *fiber.Ctx, q attempt.Query, kind string, found func(attempt.Page) bool) error {
	ctx, cancel := h.ctx(c)
	defer cancel()
	p, err := h.Attempts.Read(ctx, q)
	if err != nil {
		return h.unavailable(c, err, "the attempt log")
	}
	if !found(p) {
		return problem.New(http.StatusNotFound, "no subscription with this id")
	}
	out := page[attemptView]{Data: make([]attemptView, 0, len(p.Records)), NextCursor: seqCursor(kind, p.Next)}
	for _, r := range p.Records {
		out.Data = append(out.Data, viewAttempt(r))
	}
	return c.JSON(out)
}

func (h *handler) deadLetters(c *fiber.Ctx) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	before, n, _, errs := historyQuery(c, cursorDeadLetters)
	if len(errs) > 0 {
		return problem.Invalid(errs)
	}
	exists, err := h.known(c, id)
	if err != nil {
		return err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	p, err := h.DeadLetters.Page(ctx, id, before, n)
	if err != nil {
		return h.unavailable(c, err, "the dead letters")
	}
	if !exists && before == 0 && len(p.Letters) == 0 {
		return problem.New(http.StatusNotFound, "no subscription with this id")
	}
	return c.JSON(page[deadletter.Letter]{Data: p.Letters, NextCursor: seqCursor(cursorDeadLetters, p.Next)})
}

// unavailable answers a failure to read or write NATS with a 503, to be
// retried; the cause is logged here, where it is handled, and the answer
// names only what was unavailable. Any other error is left to the error
// handler (a 500, logged there).
func (h *handler) unavailable(c *fiber.Ctx, err error, what string) error {
	if !errors.Is(err, attempt.ErrUnavailable) && !errors.Is(err, deadletter.ErrUnavailable) &&
		!errors.Is(err, jobs.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	h.Logger.Warn("admin request failed against NATS", "route", c.Route().Path, "error", err)
	c.Set(fiber.HeaderRetryAfter, "1")
	return problem.New(http.StatusServiceUnavailable, what+" is unavailable; retry")
}
