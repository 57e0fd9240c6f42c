// Package health serves the liveness and readiness endpoints that
// orchestrators and load balancers poll.
package health

import (
	"context"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/shared/problem"
)

// Register adds GET /healthz (the process answers) and GET /readyz (ready
// reports nil within 2 s; otherwise 503 with its reason).
func Register(app *fiber.App, ready func(context.Context) error) {
	app.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	app.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			return problem.New(http.StatusServiceUnavailable, "not ready: "+err.Error())
		}
		return c.JSON(fiber.Map{"status": "ready"})
	})
}
