package receive

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/problem"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/webhook"
	"github.com/jethook/jethook/shared/webhook/fiberwebhook"
)

// Path is where order.paid webhooks are posted.
const Path = "/webhook/order-paid"

// Subject is where accepted order.paid webhooks wait for their email.
const Subject = "notifications.order-paid"

// MaxBodyBytes is the largest webhook body accepted; larger ones get 413.
// It is the server's BodyLimit, so that Fiber refuses a larger body by its
// Content-Length before reading it, and the limit that a Verifier applies
// when its MaxBodyBytes is left at zero.
const MaxBodyBytes = webhook.DefaultMaxBodyBytes

// DefaultTimeout bounds the NATS work of one request, so that the sender
// gets a fast 503 and retries rather than hang.
const DefaultTimeout = 3 * time.Second

// Conn is the part of the NATS connection the handler needs.
type Conn interface {
	IsConnected() bool
}

// Handler receives order.paid webhooks.
type Handler struct {
	// Verifier checks each request before the handler parses it (see
	// webhook.Verifier.Receive); a MaxBodyBytes above MaxBodyBytes has no
	// effect, because the server refuses such bodies first.
	Verifier webhook.Verifier
	Conn     Conn
	JS       jetstream.JetStream
	Store    *processed.Store
	// Logger receives one line per request, written by the middleware
	// that NewApp installs, with what Serve adds about the webhook.
	Logger *slog.Logger
	// Metrics counts the webhooks by outcome; NewApp sets a fresh one
	// when it is nil.
	Metrics *Metrics
	// Timeout bounds the NATS work of one request; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxEventAge refuses events older than this (PROCESSED_TTL): the
	// idempotency record of such an event may have expired, so a replay
	// could not be told from a first delivery. Zero means no limit.
	MaxEventAge time.Duration
	// Now is the clock for MaxEventAge; nil means time.Now.
	Now func() time.Time
}

// NewApp returns the notifier's HTTP server: the webhook route, the health
// endpoints and /metrics, with every error answered as problem+json (logger
// gets the cause of a 500) and every request counted and logged.
func NewApp(h *Handler, logger *slog.Logger, ready func(context.Context) error) *fiber.App {
	if h.Metrics == nil {
		h.Metrics = NewMetrics(metrics.NewRegistry())
	}
	app := service.NewApp(service.AppConfig{
		Name: "notifier", Logger: logger, Registry: h.Metrics.reg, Observe: h.Metrics.observe,
		BodyLimit: MaxBodyBytes, Ready: ready,
	})
	app.Post(Path, h.Serve)
	return app
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// result is what became of one request, for its log line and metrics.
type result struct {
	outcome string
	eventID string
	orderID string
	// cause is the error behind a 503, logged but never shown.
	cause error
}

// Serve handles one webhook and counts it. Its log line is the request's
// own, written by the middleware with the ids and outcome added here (and
// the status, and the reason of a refusal).
func (h *Handler) Serve(c *fiber.Ctx) error {
	res, err := h.serve(c)
	h.Metrics.receivedOne(res.outcome)
	attrs := []any{"event_id", res.eventID, "order_id", res.orderID, "outcome", res.outcome}
	if res.cause != nil {
		attrs = append(attrs, "error", res.cause.Error())
	}
	metrics.Annotate(c, attrs...)
	if err != nil {
		return err
	}
	// The answer's status words are part of the webhook contract.
	status := "event_received"
	if res.outcome == outcomeDuplicate {
		status = "duplicate"
	}
	return c.JSON(fiber.Map{"status": status})
}

func (h *Handler) serve(c *fiber.Ctx) (result, error) {
	res := result{eventID: c.Get(webhook.HeaderID)}
	// The library makes every check a receiver of Standard Webhooks
	// needs, in the order and with the refusals that it documents; what
	// follows is the notifier's own business.
	msg, err := fiberwebhook.Receive(c, h.Verifier)
	var refusal *webhook.Refusal
	if errors.As(err, &refusal) {
		res.outcome = refusalOutcome(refusal.Status)
		return res, problem.New(refusal.Status, refusal.Detail)
	}
	ev, err := event.Decode(msg.Body)
	var syntaxErr *event.SyntaxError
	var validationErr *event.ValidationError
	switch {
	case errors.As(err, &syntaxErr):
		res.outcome = outcomeMalformed
		return res, problem.New(http.StatusBadRequest, syntaxErr.Error())
	case errors.As(err, &validationErr):
		res.outcome = outcomeInvalid
		return res, problem.Invalid(validationErr.Fields)
	case err != nil:
		res.outcome = outcomeMalformed
		return res, problem.New(http.StatusBadRequest, err.Error())
	}
	res.orderID = ev.Data.OrderID
	if ev.ID != msg.ID {
		res.outcome = outcomeInvalid
		return res, problem.Invalid(map[string]string{"id": "must equal the " + webhook.HeaderID + " header"})
	}
	if h.MaxEventAge > 0 && h.now().Sub(ev.Timestamp) > h.MaxEventAge {
		// A genuine delivery never takes this long; a replay (a recreated
		// consumer reading old events, say) must not send a second email.
		// The 422 makes the dispatcher dead-letter it, where it is seen.
		res.outcome = outcomeInvalid
		return res, problem.Invalid(map[string]string{"timestamp": "older than PROCESSED_TTL (" + h.MaxEventAge.String() + "): its duplicates can no longer be detected"})
	}

	// Without a connection every NATS call would wait for the timeout;
	// the sender is better served by a 503 at once.
	if !h.Conn.IsConnected() {
		res.outcome = outcomeUnavailable
		return res, unavailable(c, "not connected to NATS")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), h.timeout())
	defer cancel()
	state, err := h.Store.Lookup(ctx, ev.ID)
	if err != nil {
		res.outcome, res.cause = outcomeUnavailable, err
		return res, unavailable(c, "idempotency store unavailable")
	}
	if state != "" {
		res.outcome = outcomeDuplicate
		return res, nil
	}
	// msg.Body is the library's copy, not Fiber's request memory, which is
	// reused once the handler returns: the NATS client may still hold the
	// message after a timeout.
	out := &nats.Msg{Subject: Subject, Data: msg.Body, Header: nats.Header{}}
	out.Header.Set(jetstream.MsgIDHeader, ev.ID)
	// The hand-off carries the webhook's trace on to the email worker.
	pubCtx, span := tracing.StartPublish(ctx, natsx.StreamNotifications, out, ev.ID, ev.ID, ev.Data.OrderID)
	ack, err := h.JS.PublishMsg(pubCtx, out)
	tracing.End(span, err)
	if err != nil {
		res.outcome, res.cause = outcomeUnavailable, err
		return res, unavailable(c, "could not queue the notification")
	}
	if ack.Duplicate {
		res.outcome = outcomeDuplicate
		return res, nil
	}
	res.outcome = outcomeAccepted
	return res, nil
}

func (h *Handler) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return DefaultTimeout
}

// refusalOutcome is the outcome of a webhook that the library refused,
// by the status it chose.
func refusalOutcome(status int) string {
	switch status {
	case http.StatusRequestEntityTooLarge:
		return outcomeTooLarge
	case http.StatusUnsupportedMediaType:
		return outcomeUnsupportedMediaType
	case http.StatusBadRequest:
		return outcomeMalformed
	case http.StatusInternalServerError:
		// A verifier without secrets; config.Load does not let one start.
		return outcomeUnavailable
	}
	return outcomeForged
}

// unavailable is a 503 that tells the sender when to retry.
func unavailable(c *fiber.Ctx, detail string) error {
	c.Set(fiber.HeaderRetryAfter, "5")
	return problem.New(http.StatusServiceUnavailable, detail+"; retry later")
}
