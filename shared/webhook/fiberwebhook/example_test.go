package fiberwebhook_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/shared/webhook"
	"github.com/jethook/jethook/shared/webhook/fiberwebhook"
)

// A Fiber service receives webhooks behind New: its handler sees only
// verified ones, and refusals are answered as problem+json.
func ExampleNew() {
	secrets, err := webhook.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		log.Fatal(err)
	}
	v := webhook.Verifier{Secrets: secrets}
	// The same limit for Fiber, which reads the body before any handler.
	app := fiber.New(fiber.Config{BodyLimit: webhook.DefaultMaxBodyBytes})
	app.Post("/webhooks/jethook", fiberwebhook.New(v), func(c *fiber.Ctx) error {
		msg, _ := fiberwebhook.Message(c)
		// msg.Body is verified: parse it now, and drop duplicates by msg.ID.
		fmt.Printf("%s: %s\n", msg.ID, msg.Body)
		return c.SendStatus(fiber.StatusNoContent)
	})

	// A webhook as jethook's dispatcher sends it, signed now, then one
	// sent as text.
	for _, contentType := range []string{"application/json", "text/plain"} {
		body := []byte(`{"type":"order.paid"}`)
		req := httptest.NewRequest(http.MethodPost, "/webhooks/jethook", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		webhook.SetHeaders(req.Header, secrets, "evt_1", time.Now(), body)
		resp, err := app.Test(req, -1)
		if err != nil {
			log.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		fmt.Println(strings.TrimSpace(resp.Status + " " + string(answer)))
	}
	// Output:
	// evt_1: {"type":"order.paid"}
	// 204 No Content
	// 415 Unsupported Media Type {"type":"about:blank","title":"Unsupported Media Type","status":415,"detail":"Content-Type must be application/json","instance":"/webhooks/jethook"}
}
