package problem

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/shared/event"
)

// ContentType is the media type of every error body.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem detail with the field errors of a 422.
type Problem struct {
	Type     string            `json:"type"`
	Title    string            `json:"title"`
	Status   int               `json:"status"`
	Detail   string            `json:"detail,omitempty"`
	Instance string            `json:"instance,omitempty"`
	Errors   map[string]string `json:"errors,omitempty"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Title + ": " + p.Detail
	}
	return p.Title
}

// New returns a problem of the given status with the standard title.
func New(status int, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// Invalid is a 422 with field → message.
func Invalid(fields map[string]string) *Problem {
	p := New(http.StatusUnprocessableEntity, "the request breaks the contract; see errors")
	p.Errors = fields
	return p
}

// FromDecode turns an error of the JSON decoders of package event into its
// answer: 400 for what is not one well-formed JSON value, 422 with the
// fields for what breaks the contract. Any other error is returned as it
// is.
func FromDecode(err error) error {
	var se *event.SyntaxError
	var ve *event.ValidationError
	switch {
	case errors.As(err, &se):
		return New(http.StatusBadRequest, se.Error())
	case errors.As(err, &ve):
		return Invalid(ve.Fields)
	}
	return err
}

// ErrorHandler is the one place where errors become HTTP answers: a
// *Problem as it is, a *fiber.Error by its code, anything else a 500 whose
// cause is logged but never shown to the client.
func ErrorHandler(logger *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var p *Problem
		var fe *fiber.Error
		switch {
		case errors.As(err, &p):
		case errors.As(err, &fe):
			p = New(fe.Code, fe.Message)
			if fe.Message == http.StatusText(fe.Code) {
				p.Detail = ""
			}
		default:
			logger.Error("request failed", "error", err, "method", c.Method(), "path", c.Path())
			p = New(http.StatusInternalServerError, "")
		}
		return Write(c, p)
	}
}

// Write answers the request with p as problem+json, its instance being
// the request's path. It is for handlers that must answer an error
// themselves rather than return it to the ErrorHandler, which answers
// this way too.
func Write(c *fiber.Ctx, p *Problem) error {
	cp := *p
	cp.Instance = c.Path()
	c.Status(cp.Status)
	c.Set(fiber.HeaderContentType, ContentType)
	return c.JSON(cp, ContentType)
}
