package email

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natsx"
)

// pendingTimeout bounds the consumer lookup behind the pending gauge, so
// that a slow or absent NATS never holds a scrape for long.
const pendingTimeout = time.Second

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
			Help: "Confirmation emails by outcome: sent, failed (to be retried), duplicate (already sent, not sent again) or dead_lettered (refused for good, or out of attempts).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "notifier", Name: "email_duration_seconds",
			Help:    "Duration of one email send, successful or not.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	for _, outcome := range []string{"sent", "failed", "duplicate", "dead_lettered"} {
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

// Settled counts what became of one message, as the runtime carried it
// out. Messages that tried nothing (another worker holds the event, the
// store is away) are not emails and are not counted; their log lines say
// what happened.
func (m *Metrics) Settled(s consume.Settled) {
	if m == nil {
		return
	}
	switch {
	case s.Verdict == consume.VerdictDeadLetter:
		m.emails.WithLabelValues("dead_lettered").Inc()
	case s.Decision.Outcome == outcomeSent, s.Decision.Outcome == outcomeSentUnrecorded:
		m.emails.WithLabelValues("sent").Inc()
	case s.Decision.Outcome == outcomeDuplicate:
		m.emails.WithLabelValues("duplicate").Inc()
	case s.Decision.Outcome == outcomeSendFailed, s.Verdict == consume.VerdictRetry && s.Decision.Verdict == consume.VerdictDeadLetter:
		m.emails.WithLabelValues("failed").Inc()
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
