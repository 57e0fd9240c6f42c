package email

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
)

// pendingTimeout bounds the consumer lookup behind the pending gauge, so
// that a slow or absent NATS never holds a scrape for long.
const pendingTimeout = time.Second

// emailOutcomes maps the outcome of a handled message to the outcome label
// of jethook_notifier_emails_total. The outcomes left out sent nothing and
// tried nothing (another worker holds the event, the store is away, the
// body is corrupt); their log lines say so.
var emailOutcomes = map[string]string{
	"sent":            "sent",
	"sent_unrecorded": "sent",
	"send_failed":     "failed",
	"duplicate":       "duplicate",
}

// Metrics are the email worker's metrics. A nil *Metrics records nothing.
type Metrics struct {
	emails   *prometheus.CounterVec
	duration prometheus.Histogram
}

// NewMetrics registers the email metrics with reg: emails by outcome (each
// starting at 0), the duration of sends, and the number of notifications
// waiting, read from the notifier-email consumer on js at scrape time.
func NewMetrics(reg prometheus.Registerer, js jetstream.JetStream) *Metrics {
	m := &Metrics{
		emails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "notifier", Name: "emails_total",
			Help: "Confirmation emails by outcome: sent, failed (to be retried) or duplicate (already sent, not sent again).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "notifier", Name: "email_duration_seconds",
			Help:    "Duration of one email send, successful or not.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	for _, outcome := range []string{"sent", "failed", "duplicate"} {
		m.emails.WithLabelValues(outcome)
	}
	reg.MustRegister(m.emails, m.duration, &pendingCollector{js: js, desc: prometheus.NewDesc(
		prometheus.BuildFQName(metrics.Namespace, "notifier", "notifications_pending"),
		"Notifications waiting for their email: pending plus unacknowledged messages of the "+natsx.ConsumerEmail+" consumer. Absent while NATS cannot tell.",
		nil, nil)})
	return m
}

func (m *Metrics) sendTook(d time.Duration) {
	if m != nil {
		m.duration.Observe(d.Seconds())
	}
}

func (m *Metrics) handled(outcome string) {
	if m == nil {
		return
	}
	if label, ok := emailOutcomes[outcome]; ok {
		m.emails.WithLabelValues(label).Inc()
	}
}

// pendingCollector reads the consumer's backlog when Prometheus scrapes,
// so the value is never stale. It reports nothing rather than 0 when NATS
// cannot answer: an empty queue and an unknown one are not the same.
type pendingCollector struct {
	js   jetstream.JetStream
	desc *prometheus.Desc
}

func (p *pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

func (p *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	if !p.js.Conn().IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), pendingTimeout)
	defer cancel()
	cons, err := p.js.Consumer(ctx, natsx.StreamNotifications, natsx.ConsumerEmail)
	if err != nil {
		return
	}
	info := cons.CachedInfo()
	ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, float64(info.NumPending+uint64(info.NumAckPending)))
}
