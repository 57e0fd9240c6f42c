package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/problem"
)

// MaxBodyBytes bounds a request body: a subscription with full metadata
// is under 30 KiB. The app's BodyLimit should be the same, so that a
// larger body is refused before it is read whole.
const MaxBodyBytes = 64 << 10

// DefaultTimeout bounds a request's work against NATS.
const DefaultTimeout = 5 * time.Second

// Routes of the admin API, also the values of their route label.
const (
	Prefix             = "/v1"
	RouteSubscriptions = Prefix + "/subscriptions"
	RouteSubscription  = Prefix + "/subscriptions/:id"
	RouteEnable        = Prefix + "/subscriptions/:id/enable"
	RouteDisable       = Prefix + "/subscriptions/:id/disable"
	RouteSecret        = Prefix + "/subscriptions/:id/secret"
	RouteRotate        = Prefix + "/subscriptions/:id/secret/rotate"
	RoutePing          = Prefix + "/subscriptions/:id/ping"
	RouteAttempts      = Prefix + "/subscriptions/:id/attempts"
	RouteEventAttempts = Prefix + "/events/:event_id/attempts"
	RouteDeadLetters   = Prefix + "/subscriptions/:id/dead-letters"
	RouteReplay        = Prefix + "/subscriptions/:id/dead-letters/replay"
	RouteRecover       = Prefix + "/subscriptions/:id/recover"
	RouteJob           = Prefix + "/jobs/:job_id"
)

// Registry is what the admin API needs of the subscription registry.
type Registry interface {
	Create(ctx context.Context, f subscription.Fields) (registry.Entry, string, error)
	Get(ctx context.Context, id string) (registry.Entry, error)
	List(ctx context.Context, after string, limit int) ([]registry.Entry, bool, error)
	Update(ctx context.Context, id string, ifRevision uint64, f subscription.Fields) (registry.Entry, error)
	SetStatus(ctx context.Context, id string, ifRevision uint64, status subscription.Status, reason subscription.Reason) (registry.Entry, bool, error)
	Delete(ctx context.Context, id string, ifRevision uint64) error
	Rotate(ctx context.Context, id string, ifRevision uint64, grace time.Duration) (registry.Entry, string, error)
}

var _ Registry = (*registry.Registry)(nil)

// Deps is what the admin API runs on, each dependency an interface
// declared beside its handlers. The routes of a dependency left nil are
// not served (404), so that a test of one part needs only that part.
type Deps struct {
	// Token is ADMIN_TOKEN; a request must present it as a Bearer token.
	Token string
	// Registry stores the subscriptions.
	Registry Registry
	// URLs checks webhook URLs (the SSRF guard).
	URLs subscription.URLChecker
	// Attempts reads the attempt log: the attempts routes.
	Attempts Attempts
	// DeadLetters reads and replays dead letters: the dead-letters routes.
	DeadLetters DeadLetters
	// Jobs makes and reports recovery jobs: recover and the jobs route.
	Jobs Jobs
	// Pinger sends pings: the ping route.
	Pinger Pinger
	// StatusChanged, when set, is told of every status change made through
	// the API (enable, disable), after it is stored: where an OPS event
	// is published. The entry is the subscription as stored.
	StatusChanged func(ctx context.Context, e registry.Entry)
	// Now returns the current time, for the secrets' expiry; nil means
	// time.Now.
	Now func() time.Time
	// Timeout bounds each request's work against NATS; zero means
	// DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

// handler serves the admin routes.
type handler struct {
	Deps
	tokenSum [sha256.Size]byte
}

// Register adds the admin API to app and returns its authenticated /v1
// group, for further routes. Every path under /v1, known or not, needs
// the token first, so that an unauthenticated caller learns nothing, not
// even which routes exist.
func Register(app fiber.Router, d Deps) fiber.Router {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Timeout <= 0 {
		d.Timeout = DefaultTimeout
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{Deps: d, tokenSum: sha256.Sum256([]byte(d.Token))}
	v1 := app.Group(Prefix, h.authenticate)
	v1.Post("/subscriptions", h.create)
	v1.Get("/subscriptions", h.list)
	v1.Get("/subscriptions/:id", h.get)
	v1.Patch("/subscriptions/:id", h.patch)
	v1.Delete("/subscriptions/:id", h.delete)
	v1.Post("/subscriptions/:id/enable", h.enable)
	v1.Post("/subscriptions/:id/disable", h.disable)
	v1.Get("/subscriptions/:id/secret", h.secret)
	v1.Post("/subscriptions/:id/secret/rotate", h.rotate)
	if d.Pinger != nil {
		v1.Post("/subscriptions/:id/ping", h.ping)
	}
	if d.Attempts != nil {
		v1.Get("/subscriptions/:id/attempts", h.subscriptionAttempts)
		v1.Get("/events/:event_id/attempts", h.eventAttempts)
	}
	if d.DeadLetters != nil {
		v1.Get("/subscriptions/:id/dead-letters", h.deadLetters)
		v1.Post("/subscriptions/:id/dead-letters/replay", h.replay)
	}
	if d.Jobs != nil {
		v1.Post("/subscriptions/:id/recover", h.recoverRange)
		v1.Get("/jobs/:job_id", h.job)
	}
	return v1
}

// authenticate accepts "Authorization: Bearer <token>". Both sides are
// hashed before the constant-time comparison, so that neither the
// token's content nor its length shows in the timing.
func (h *handler) authenticate(c *fiber.Ctx) error {
	header := c.Get(fiber.HeaderAuthorization)
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return unauthorized(c, header != "")
	}
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) != 1 || h.Token == "" {
		return unauthorized(c, true)
	}
	return c.Next()
}

func unauthorized(c *fiber.Ctx, sent bool) error {
	challenge := `Bearer realm="jethook admin"`
	detail := "send Authorization: Bearer <ADMIN_TOKEN>"
	if sent {
		challenge += `, error="invalid_token"`
		detail = "the Authorization header does not carry the admin token; send Authorization: Bearer <ADMIN_TOKEN>"
	}
	c.Set(fiber.HeaderWWWAuthenticate, challenge)
	return problem.New(http.StatusUnauthorized, detail)
}

func (h *handler) ctx(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.UserContext(), h.Timeout)
}

// registryProblem maps the registry's errors to answers; anything else is
// a 500, logged by the error handler.
func registryProblem(c *fiber.Ctx, err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return problem.New(http.StatusNotFound, "no subscription with this id")
	case errors.Is(err, registry.ErrStale):
		return problem.New(http.StatusPreconditionFailed, "the subscription changed since that ETag; GET it again and retry with its new ETag")
	case errors.Is(err, registry.ErrTooManySecrets):
		return problem.New(http.StatusConflict, err.Error())
	case errors.Is(err, registry.ErrInvalid):
		return problem.New(http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, registry.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		c.Set(fiber.HeaderRetryAfter, "1")
		return problem.New(http.StatusServiceUnavailable, "the subscription registry is unavailable; retry")
	}
	return err
}
