package receive

import (
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/shared/metrics"
)

// Outcomes of a webhook, as logged and as the outcome label of
// jethook_notifier_webhooks_received_total.
const (
	outcomeAccepted             = "accepted"
	outcomeDuplicate            = "duplicate"
	outcomeForged               = "forged"
	outcomeInvalid              = "invalid"
	outcomeMalformed            = "malformed"
	outcomeTooLarge             = "too_large"
	outcomeUnsupportedMediaType = "unsupported_media_type"
	outcomeUnavailable          = "unavailable"
)

// Metrics are the notifier's receiving metrics, registered with the
// registry that NewApp serves at /metrics. A nil *Metrics records nothing.
type Metrics struct {
	reg      *prometheus.Registry
	received *prometheus.CounterVec
}

// NewMetrics registers jethook_notifier_webhooks_received_total with reg,
// every outcome starting at 0 so that rates and alerts work before the
// first webhook.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "notifier", Name: "webhooks_received_total",
			Help: "Webhooks received, by outcome: accepted (queued for its email), duplicate, or why it was refused.",
		}, []string{"outcome"}),
	}
	for _, outcome := range []string{outcomeAccepted, outcomeDuplicate, outcomeForged, outcomeInvalid,
		outcomeMalformed, outcomeTooLarge, outcomeUnsupportedMediaType, outcomeUnavailable} {
		m.received.WithLabelValues(outcome)
	}
	reg.MustRegister(m.received)
	return m
}

func (m *Metrics) receivedOne(outcome string) {
	if m != nil {
		m.received.WithLabelValues(outcome).Inc()
	}
}

// observe counts the webhooks that the server refused by their length
// alone, before Serve ran; Serve counts all the others.
func (m *Metrics) observe(_ *fiber.Ctx, route string, status int) {
	if route == Path && status == http.StatusRequestEntityTooLarge {
		m.receivedOne(outcomeTooLarge)
	}
}
