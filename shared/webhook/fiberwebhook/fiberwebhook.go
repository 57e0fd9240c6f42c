package fiberwebhook

import (
	"bytes"
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/shared/problem"
	"github.com/jethook/jethook/shared/webhook"
)

// New returns a Fiber handler that lets only verified webhooks through to
// the route's next handler, where Message returns the verified message.
// It answers every refusal itself, as problem+json, with the statuses and
// details of webhook.Verifier.Receive; use Receive instead to handle
// refusals another way, such as through the app's error handler.
func New(v webhook.Verifier) fiber.Handler {
	return func(c *fiber.Ctx) error {
		msg, err := Receive(c, v)
		if err != nil {
			var ref *webhook.Refusal
			if !errors.As(err, &ref) {
				return err
			}
			return problem.Write(c, problem.New(ref.Status, ref.Detail))
		}
		c.Locals(messageKey{}, msg)
		return c.Next()
	}
}

// Receive checks the request of c as webhook.Verifier.Receive does and
// returns the verified message, or a *webhook.Refusal to answer with. The
// message is a copy, safe to keep after the handler returns, although
// Fiber reuses the request's memory.
func Receive(c *fiber.Ctx, v webhook.Verifier) (webhook.Message, error) {
	// The raw bytes, not c.Body(): that one would inflate a compressed
	// body, past the size limit and past what was signed.
	body := c.Request().Body()
	// The declared length, as net/http would give it, rather than the
	// length of the body already read: a chunked body (fasthttp says -1 or
	// less) then meets the checks in the same order in both packages.
	declared := int64(c.Request().Header.ContentLength())
	if declared < 0 {
		declared = -1
	}
	return v.Receive(header(c.Request().Header.PeekAll), declared, bytes.NewReader(body))
}

// Message returns the verified message that the New handler stored for
// the request, and false when the request did not pass through it.
func Message(c *fiber.Ctx) (webhook.Message, bool) {
	msg, ok := c.Locals(messageKey{}).(webhook.Message)
	return msg, ok
}

// messageKey is the c.Locals key of the verified message; a type of its
// own so that no other package can collide with it.
type messageKey struct{}

// header gives a fasthttp request header the webhook.Header method. The
// values are copies, because fasthttp reuses the memory it returns.
type header func(key string) [][]byte

func (h header) Values(key string) []string {
	all := h(key)
	if len(all) == 0 {
		return nil
	}
	values := make([]string, len(all))
	for i, v := range all {
		values[i] = string(v)
	}
	return values
}
