package api

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/metrics"
)

// Routes of the orders API, also the values of their route label.
const (
	RouteOrders = "/orders"
	RouteOrder  = "/orders/:id"
)

// rejectReasons is the reason label of each refusal of the orders routes.
var rejectReasons = map[int]string{
	fiber.StatusBadRequest:            "malformed",
	fiber.StatusUnprocessableEntity:   "invalid",
	fiber.StatusConflict:              "conflict",
	fiber.StatusRequestEntityTooLarge: "too_large",
	fiber.StatusUnsupportedMediaType:  "unsupported_media_type",
	fiber.StatusServiceUnavailable:    "unavailable",
	fiber.StatusNotFound:              "not_found",
}

// Metrics are the orders service's own metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	created         prometheus.Counter
	rejected        *prometheus.CounterVec
	publishDuration prometheus.Histogram
	publishErrors   prometheus.Counter
}

// NewMetrics registers the orders metrics with reg, every reason of
// jethook_orders_rejected_total starting at 0 so that rates and alerts work
// before the first refusal.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "orders", Name: "created_total",
			Help: "Orders created and paid, their order.paid event durably in ORDERS. Idempotent replays are not counted.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "orders", Name: "rejected_total",
			Help: "Requests to the orders API refused, by reason.",
		}, []string{"reason"}),
		publishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "orders", Name: "publish_duration_seconds",
			Help:    "Time to publish an order.paid event to JetStream and receive its PubAck.",
			Buckets: prometheus.DefBuckets,
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "orders", Name: "publish_errors_total",
			Help: "order.paid publishes that failed or got no PubAck in time.",
		}),
	}
	for _, reason := range rejectReasons {
		m.rejected.WithLabelValues(reason)
	}
	reg.MustRegister(m.created, m.rejected, m.publishDuration, m.publishErrors)
	return m
}

// Observe counts the refusals of the orders routes. It is the
// metrics.HTTPConfig.Observe of the orders app, so that it also sees a body
// refused for its size before any handler ran.
func (m *Metrics) Observe(_ *fiber.Ctx, route string, status int) {
	if m == nil || (route != RouteOrders && route != RouteOrder) {
		return
	}
	if reason, ok := rejectReasons[status]; ok {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) orderCreated() {
	if m != nil {
		m.created.Inc()
	}
}

// Publisher returns p timed and its failures counted.
func (m *Metrics) Publisher(p order.EventPublisher) order.EventPublisher {
	if m == nil {
		return p
	}
	return timedPublisher{next: p, m: m}
}

// timedPublisher measures the publishes of the EventPublisher it wraps.
type timedPublisher struct {
	next order.EventPublisher
	m    *Metrics
}

var _ order.EventPublisher = timedPublisher{}

func (t timedPublisher) PublishOrderPaid(ctx context.Context, e event.OrderPaid, createdAt time.Time) (bool, error) {
	start := time.Now()
	stored, err := t.next.PublishOrderPaid(ctx, e, createdAt)
	t.m.publishDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		t.m.publishErrors.Inc()
	}
	return stored, err
}
