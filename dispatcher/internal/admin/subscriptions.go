package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/problem"
)

// mergePatch is RFC 7396's media type, which PATCH also accepts: a body
// of ours is a merge patch (null resets a field to its default).
const mergePatch = "application/merge-patch+json"

// created is the answer to a create: the subscription and, this once in
// its life, its secret.
type created struct {
	subscription.Subscription
	Secret string `json:"secret"`
}

type list struct {
	Data       []subscription.Subscription `json:"data"`
	NextCursor *string                     `json:"next_cursor"`
}

type secrets struct {
	Secrets []registry.Secret `json:"secrets"`
}

type rotated struct {
	Secret string `json:"secret"`
}

// noStore keeps an answer that shows a secret out of every cache.
func noStore(c *fiber.Ctx) { c.Set(fiber.HeaderCacheControl, "no-store") }

func (h *handler) create(c *fiber.Ctx) error {
	b, err := body(c, false)
	if err != nil {
		return err
	}
	f, err := subscription.DecodeCreate(b, h.URLs)
	if err != nil {
		return problem.FromDecode(err)
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	e, secret, err := h.Registry.Create(ctx, f)
	if err != nil {
		return registryProblem(c, err)
	}
	metrics.Annotate(c, "subscription_id", e.Subscription.ID)
	c.Location(RouteSubscriptions + "/" + e.Subscription.ID)
	c.Set(fiber.HeaderETag, etag(e.Revision))
	noStore(c)
	return c.Status(http.StatusCreated).JSON(created{Subscription: e.Subscription, Secret: secret})
}

func (h *handler) list(c *fiber.Ctx) error {
	after, limit, err := listQuery(c)
	if err != nil {
		return err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	entries, more, err := h.Registry.List(ctx, after, limit)
	if err != nil {
		return registryProblem(c, err)
	}
	out := list{Data: make([]subscription.Subscription, 0, len(entries))}
	for _, e := range entries {
		out.Data = append(out.Data, e.Subscription)
	}
	if more && len(entries) > 0 {
		next := encodeCursor(entries[len(entries)-1].Subscription.ID)
		out.NextCursor = &next
	}
	return c.JSON(out)
}

func (h *handler) get(c *fiber.Ctx) error {
	e, err := h.lookup(c)
	if err != nil {
		return err
	}
	return h.answer(c, e)
}

// lookup reads the subscription the path names.
func (h *handler) lookup(c *fiber.Ctx) (registry.Entry, error) {
	id, err := subscriptionID(c)
	if err != nil {
		return registry.Entry{}, err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	e, err := h.Registry.Get(ctx, id)
	if err != nil {
		return registry.Entry{}, registryProblem(c, err)
	}
	return e, nil
}

// answer sends a subscription with its ETag.
func (h *handler) answer(c *fiber.Ctx, e registry.Entry) error {
	c.Set(fiber.HeaderETag, etag(e.Revision))
	return c.JSON(e.Subscription)
}

func (h *handler) patch(c *fiber.Ctx) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	rev, err := ifMatch(c, true)
	if err != nil {
		return err
	}
	b, err := body(c, false, fiber.MIMEApplicationJSON, mergePatch)
	if err != nil {
		return err
	}
	f, err := subscription.DecodePatch(b, h.URLs)
	if err != nil {
		return problem.FromDecode(err)
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	e, err := h.Registry.Update(ctx, id, rev, f)
	if err != nil {
		return registryProblem(c, err)
	}
	return h.answer(c, e)
}

func (h *handler) delete(c *fiber.Ctx) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	rev, err := ifMatch(c, false)
	if err != nil {
		return err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	if err := h.Registry.Delete(ctx, id, rev); err != nil {
		return registryProblem(c, err)
	}
	return c.SendStatus(http.StatusNoContent)
}

func (h *handler) enable(c *fiber.Ctx) error {
	return h.setStatus(c, subscription.StatusEnabled, "")
}

func (h *handler) disable(c *fiber.Ctx) error {
	return h.setStatus(c, subscription.StatusDisabled, subscription.ReasonManual)
}

func (h *handler) setStatus(c *fiber.Ctx, status subscription.Status, reason subscription.Reason) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	rev, err := ifMatch(c, false)
	if err != nil {
		return err
	}
	if _, err := optionalObject(c); err != nil {
		return err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	e, changed, err := h.Registry.SetStatus(ctx, id, rev, status, reason)
	if err != nil {
		return registryProblem(c, err)
	}
	if changed && h.StatusChanged != nil {
		h.StatusChanged(ctx, e)
	}
	return h.answer(c, e)
}

func (h *handler) secret(c *fiber.Ctx) error {
	e, err := h.lookup(c)
	if err != nil {
		return err
	}
	noStore(c)
	return c.JSON(secrets{Secrets: e.Secrets(h.Now())})
}

func (h *handler) rotate(c *fiber.Ctx) error {
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	rev, err := ifMatch(c, false)
	if err != nil {
		return err
	}
	raw, err := optionalObject(c, "grace")
	if err != nil {
		return err
	}
	grace := registry.DefaultGrace
	if v, ok := raw["grace"]; ok && string(v) != "null" {
		d, ok := parseGrace(v)
		if !ok {
			return problem.Invalid(map[string]string{"grace": fmt.Sprintf(
				"must be a duration string between 0s and %s, such as \"24h\"; \"0s\" retires the old secrets at once", registry.MaxGrace)})
		}
		grace = d
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	e, secret, err := h.Registry.Rotate(ctx, id, rev, grace)
	if err != nil {
		return registryProblem(c, err)
	}
	c.Set(fiber.HeaderETag, etag(e.Revision))
	noStore(c)
	return c.JSON(rotated{Secret: secret})
}

// optionalObject reads a body that may be empty or a JSON object with
// only the known members, and returns those.
func optionalObject(c *fiber.Ctx, known ...string) (map[string]json.RawMessage, error) {
	b, err := body(c, true)
	if err != nil || b == nil {
		return nil, err
	}
	raw, err := subscription.DecodeObjectWith(b, known...)
	if err != nil {
		return nil, problem.FromDecode(err)
	}
	return raw, nil
}

// parseGrace reads a rotation's grace: a Go duration string within
// [0, registry.MaxGrace].
func parseGrace(v json.RawMessage) (time.Duration, bool) {
	var s string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= 0 && d <= registry.MaxGrace
}
