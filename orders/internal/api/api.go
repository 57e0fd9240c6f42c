package api

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/problem"
)

// MaxBodyBytes bounds a POST /orders body; an order is a few hundred bytes.
const MaxBodyBytes = 64 << 10

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

// Handler serves the orders API.
type Handler struct {
	// Service is nil until NATS is provisioned; until then every request
	// answers 503.
	Service atomic.Pointer[order.Service]
	Metrics *Metrics
	// Timeout bounds each request's work against NATS, so a NATS outage
	// yields a 503 and never a hung request.
	Timeout time.Duration
}

// Register adds the routes to app.
func (h *Handler) Register(app *fiber.App) {
	app.Post(RouteOrders, h.create)
	app.Get(RouteOrder, h.get)
}

// create answers POST /orders. Its log line is the request's own, written
// by the metrics middleware with the ids and amount added here.
func (h *Handler) create(c *fiber.Ctx) error {
	if err := requireJSON(c); err != nil {
		return err
	}
	key := c.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKeyLen || !utf8.ValidString(key) {
		return problem.Invalid(map[string]string{"Idempotency-Key": "must be at most 255 bytes of UTF-8"})
	}
	// The raw bytes: c.Body() would inflate a compressed body without any
	// limit, past BodyLimit (which counts the bytes on the wire).
	req, err := order.ParseRequest(c.Request().Body())
	if err != nil {
		return problem.FromDecode(err)
	}
	svc, err := h.service()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), h.Timeout)
	defer cancel()
	o, replayed, err := svc.Create(ctx, req, key)
	if err != nil {
		return serviceProblem(err)
	}
	metrics.Annotate(c, "order_id", o.OrderID, "event_id", o.EventID, "replayed", replayed,
		"amount_minor", o.AmountMinor, "currency", o.Currency)
	if replayed {
		c.Set("Idempotent-Replayed", "true")
	} else {
		h.Metrics.orderCreated()
	}
	c.Location("/orders/" + o.OrderID)
	return sendOrder(c, http.StatusCreated, o)
}

func (h *Handler) get(c *fiber.Ctx) error {
	svc, err := h.service()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), h.Timeout)
	defer cancel()
	o, err := svc.Get(ctx, c.Params("id"))
	if err != nil {
		return serviceProblem(err)
	}
	metrics.Annotate(c, "order_id", o.OrderID, "event_id", o.EventID)
	return sendOrder(c, http.StatusOK, o)
}

func (h *Handler) service() (*order.Service, error) {
	if svc := h.Service.Load(); svc != nil {
		return svc, nil
	}
	return nil, problem.New(http.StatusServiceUnavailable, "not ready: NATS is not provisioned yet")
}

// sendOrder answers with the order as the API shows it: without its
// fingerprint.
func sendOrder(c *fiber.Ctx, status int, o order.Order) error {
	o.Fingerprint = ""
	b, err := o.AppendJSON(make([]byte, 0, 384))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(status).Send(b)
}

// requireJSON accepts an uncompressed JSON body only: a compressed one
// could inflate far beyond the body limit, and orders are small.
func requireJSON(c *fiber.Ctx) error {
	if enc := c.Get(fiber.HeaderContentEncoding); enc != "" && !strings.EqualFold(enc, "identity") {
		return problem.New(http.StatusUnsupportedMediaType, "Content-Encoding is not supported; send the body uncompressed")
	}
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != fiber.MIMEApplicationJSON {
		return problem.New(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	return nil
}

func serviceProblem(err error) error {
	switch {
	case errors.Is(err, order.ErrNotFound):
		return problem.New(http.StatusNotFound, "no order with this id")
	case errors.Is(err, order.ErrKeyReused):
		return problem.New(http.StatusConflict, "this Idempotency-Key was used with a different request body")
	case errors.Is(err, order.ErrKeyTooOld):
		return problem.New(http.StatusConflict, "this Idempotency-Key's order was never confirmed and is too old to resume safely; send the order again with a new key")
	case errors.Is(err, order.ErrUnavailable):
		return problem.New(http.StatusServiceUnavailable, "the event store is unavailable; retry with the same Idempotency-Key")
	}
	return err
}
