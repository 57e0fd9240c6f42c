// Package fiberwebhook receives Standard Webhooks, such as jethook's, in a
// Fiber app, with the checks and the problem+json refusals of package
// webhook. It is a package of its own so that a service on net/http, which
// needs only webhook.Verifier.Middleware, does not link Fiber and fasthttp.
//
// Fiber reads a request's whole body before any handler runs, so set the
// app's BodyLimit to the Verifier's MaxBodyBytes (1 MiB unless set): Fiber
// then refuses a larger body by its Content-Length, before reading it.
//
//	v := webhook.Verifier{Secrets: secrets}
//	app := fiber.New(fiber.Config{BodyLimit: webhook.DefaultMaxBodyBytes})
//	app.Post("/webhooks", fiberwebhook.New(v), func(c *fiber.Ctx) error {
//		msg, _ := fiberwebhook.Message(c)
//		// msg.Body is verified: parse it, drop duplicates by msg.ID.
//		return c.SendStatus(fiber.StatusNoContent)
//	})
package fiberwebhook
