package deliver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/metrics"
)

// Outcomes of a delivery attempt, as logged and as the outcome label of
// jethook_dispatcher_deliveries_total.
const (
	outcomeDelivered    = "delivered"
	outcomeRetry        = "retry"
	outcomeDeadLettered = "dead_lettered"
)

// Why an event is given up: the TermWithReason text, and its reason label
// in jethook_dispatcher_dead_letters_total.
const (
	reasonPermanent     = "permanent failure"
	reasonMaxDeliveries = "max deliveries reached"
	reasonRefused       = "receiver refused the content"
	reasonGone          = "endpoint gone"
)

var deadLetterLabels = map[string]string{
	reasonPermanent:     "permanent",
	reasonMaxDeliveries: "max_deliveries",
	reasonRefused:       "refused",
	reasonGone:          "gone",
}

// statusClasses are the values of the status_class label; "none" is an
// attempt without an answer (connection refused, timeout) or without a post.
var statusClasses = []string{"2xx", "3xx", "4xx", "5xx", "none"}

// Metrics are the dispatcher's delivery metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	deliveries  *prometheus.CounterVec
	duration    prometheus.Histogram
	retries     prometheus.Counter
	deadLetters *prometheus.CounterVec
	bySub       *prometheus.CounterVec
	changes     *prometheus.CounterVec
}

// NewMetrics registers the delivery metrics with reg, every label
// combination starting at 0 so that rates and alerts work before the first
// event.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "dispatcher", Name: "deliveries_total",
			Help: "Delivery attempts by what became of the event (delivered, retry, dead_lettered) and the class of the receiver's status (none when it did not answer).",
		}, []string{"outcome", "status_class"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "dispatcher", Name: "delivery_duration_seconds",
			Help:    "Duration of one webhook HTTP attempt, answered or not.",
			Buckets: prometheus.DefBuckets,
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "dispatcher", Name: "retries_total",
			Help: "Events handed back to JetStream for a later attempt.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "dispatcher", Name: "dead_letters_total",
			Help: "Events copied to DEADLETTER and terminated, by reason (max_deliveries, permanent, refused, gone).",
		}, []string{"reason"}),
	}
	m.bySub = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "dispatcher", Name: "subscription_deliveries_total",
		Help: "Deliveries by subscription and what became of the event (delivered, retry, dead_lettered).",
	}, []string{"subscription_id", "outcome"})
	m.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "dispatcher", Name: "subscription_changes_total",
		Help: "Changes of subscriptions' health: failing, paused (circuit breaker open), resumed, recovered, disabled.",
	}, []string{"change"})
	for _, outcome := range []string{outcomeDelivered, outcomeRetry, outcomeDeadLettered} {
		for _, class := range statusClasses {
			m.deliveries.WithLabelValues(outcome, class)
		}
	}
	for _, label := range deadLetterLabels {
		m.deadLetters.WithLabelValues(label)
	}
	for _, c := range []string{changeFailing, changePaused, changeResumed, changeRecovered, changeDisabled} {
		m.changes.WithLabelValues(c)
	}
	reg.MustRegister(m.deliveries, m.duration, m.retries, m.deadLetters, m.bySub, m.changes)
	return m
}

// changed counts a change of a subscription's health.
func (m *Metrics) changed(change string) {
	if m != nil {
		m.changes.WithLabelValues(change).Inc()
	}
}

// attempted records the duration of one HTTP attempt.
func (m *Metrics) attempted(d time.Duration) {
	if m != nil {
		m.duration.Observe(d.Seconds())
	}
}

// settled counts what became of one delivery to subscription subID, as the
// runtime carried it out: a dead letter whose copy failed counts as a
// retry.
func (m *Metrics) settled(subID string, s consume.Settled) {
	if m == nil {
		return
	}
	if s.Decision.Outcome == "held" || s.Decision.Outcome == "subscription_gone" {
		return // nothing was attempted
	}
	status, _ := s.Decision.Attr("status")
	class := statusClass(int(status.Int64()))
	outcome := outcomeDelivered
	switch s.Verdict {
	case consume.VerdictRetry:
		outcome = outcomeRetry
		m.retries.Inc()
	case consume.VerdictDeadLetter:
		outcome = outcomeDeadLettered
		m.deadLetters.WithLabelValues(deadLetterLabels[s.Decision.Reason]).Inc()
	}
	m.deliveries.WithLabelValues(outcome, class).Inc()
	if subID != "" {
		m.bySub.WithLabelValues(subID, outcome).Inc()
	}
}

func statusClass(status int) string {
	if status >= 200 && status < 600 {
		return statusClasses[status/100-2]
	}
	return "none"
}
