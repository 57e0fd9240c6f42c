package metrics

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/shared/problem"
)

// Unmatched is the route label of a request that matched no route, so
// that probing random paths cannot create new series.
const Unmatched = "unmatched"

// quietRoutes are polled every few seconds by orchestrators and by
// Prometheus. Their successful requests are logged at debug level, so that
// they do not drown the lines that matter; their failures are logged as any
// other.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, Path: true}

// HTTPConfig configures the request metrics and log lines of one app.
type HTTPConfig struct {
	// Service is the value of the "service" label: orders, dispatcher or
	// notifier.
	Service string
	// Logger receives one line per request; nil discards them.
	Logger *slog.Logger
	// Observe, when set, is called once per request after its answer is
	// set, with the route pattern (Unmatched when none) and the status.
	// Services derive their own counters from it where a handler cannot,
	// such as for a body that the server refused by its length alone (413)
	// before any handler ran.
	Observe func(c *fiber.Ctx, route string, status int)
}

// HTTP measures and logs the requests of one Fiber app. Install both
// halves: Middleware with app.Use before any route, and ErrorHandler as
// the app's fiber.Config.ErrorHandler.
type HTTP struct {
	cfg      HTTPConfig
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHTTP registers jethook_http_requests_total{service,method,route,status}
// and jethook_http_request_duration_seconds{service,method,route} with reg.
func NewHTTP(reg prometheus.Registerer, cfg HTTPConfig) *HTTP {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	service := prometheus.Labels{"service": cfg.Service}
	h := &HTTP{
		cfg: cfg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace:   Namespace,
			Subsystem:   "http",
			Name:        "requests_total",
			Help:        "HTTP requests answered, by method, route pattern and status code.",
			ConstLabels: service,
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace:   Namespace,
			Subsystem:   "http",
			Name:        "request_duration_seconds",
			Help:        "Time from the start of a request's handling to its answer, by method and route pattern.",
			ConstLabels: service,
			Buckets:     prometheus.DefBuckets,
		}, []string{"method", "route"}),
	}
	reg.MustRegister(h.requests, h.duration)
	return h
}

// request is what the middleware keeps about the request in flight.
type request struct {
	attrs []any
}

// requestKey is the c.Locals key of the *request; a type of its own so
// that no other package can collide with it.
type requestKey struct{}

// Annotate adds key-value pairs to the log line of the request in flight,
// such as event_id and order_id once the handler knows them. The line is
// written before the handler's memory is reused, so values taken from the
// request are safe. Never pass secrets, signature headers or bodies.
// Outside the middleware it does nothing.
func Annotate(c *fiber.Ctx, args ...any) {
	if r, ok := c.Locals(requestKey{}).(*request); ok {
		r.attrs = append(r.attrs, args...)
	}
}

// Middleware measures and logs every request that reaches the router. An
// error returned by a handler is answered right here through the app's
// ErrorHandler, so that the status it chooses (404, 413, 422, ...) is the
// one counted and logged.
func (h *HTTP) Middleware() fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		r := &request{}
		c.Locals(requestKey{}, r)
		// Until a route matches, c.Route() is this middleware's own.
		own := c.Route()
		if err := c.Next(); err != nil {
			r.attrs = append(r.attrs, reason(err)...)
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				_ = c.SendStatus(http.StatusInternalServerError)
			}
		}
		route := Unmatched
		if matched := c.Route(); matched != own {
			route = matched.Path
		}
		h.record(c, route, time.Since(start), r.attrs)
		return nil
	}
}

// ErrorHandler wraps the app's error handler so that the requests refused
// before routing (a body over the BodyLimit, a malformed request, a read
// timeout), which never reach the middleware, are measured and logged too.
func (h *HTTP) ErrorHandler(next fiber.ErrorHandler) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		if herr := next(c, err); herr != nil {
			_ = c.SendStatus(http.StatusInternalServerError)
		}
		if _, seen := c.Locals(requestKey{}).(*request); !seen {
			h.record(c, staticRoute(c), time.Since(c.Context().Time()), reason(err))
		}
		return nil
	}
}

// record counts, times and logs one answered request.
func (h *HTTP) record(c *fiber.Ctx, route string, elapsed time.Duration, attrs []any) {
	status := c.Response().StatusCode()
	method := knownMethod(c.Method())
	h.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	h.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
	if h.cfg.Observe != nil {
		h.cfg.Observe(c, route, status)
	}

	level := slog.LevelInfo
	switch {
	// A 503 is the expected answer while NATS is away, and the outage is
	// reported where it is seen; a 500 is a bug.
	case status >= 500 && status != http.StatusServiceUnavailable:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	case quietRoutes[route]:
		level = slog.LevelDebug
	}
	ctx := c.UserContext()
	if !h.cfg.Logger.Enabled(ctx, level) {
		return
	}
	args := make([]any, 0, 10+len(attrs))
	args = append(args, "method", method, "route", route, "path", c.Path(),
		"status", status, "duration_ms", elapsed.Milliseconds())
	h.cfg.Logger.Log(ctx, level, "http request", append(args, attrs...)...)
}

// reason returns the log attributes that say why a request was refused:
// the problem's detail and field errors, or the Fiber error's message. The
// cause of a 500 is not among them: the problem ErrorHandler logs it, once.
func reason(err error) []any {
	var p *problem.Problem
	var fe *fiber.Error
	switch {
	case errors.As(err, &p):
		var attrs []any
		if p.Detail != "" {
			attrs = append(attrs, "reason", p.Detail)
		}
		if len(p.Errors) > 0 {
			attrs = append(attrs, "errors", p.Errors)
		}
		return attrs
	case errors.As(err, &fe):
		return []any{"reason", fe.Message}
	}
	return nil
}

// knownMethod returns the method as one of Fiber's own strings. The
// request's method string lives in memory that Fiber reuses, and a label
// value is kept for the life of the process, so it must not be used as is.
// Fiber answers unknown methods itself, before any handler.
func knownMethod(m string) string {
	for _, known := range fiber.DefaultMethods {
		if m == known {
			return known
		}
	}
	return "other"
}

// staticRoute names the route of a request refused before routing: the
// route whose pattern is exactly the request's path, such as POST /orders,
// or Unmatched. Routes with parameters cannot be told apart without the
// router, and a request refused that early rarely targets them.
func staticRoute(c *fiber.Ctx) string {
	method, path := c.Method(), c.Path()
	for _, r := range c.App().GetRoutes(true) {
		if r.Method == method && r.Path == path {
			return r.Path
		}
	}
	return Unmatched
}
