package deliver

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
)

// opsEvent is one message of the OPS stream.
type opsEvent struct {
	Kind           string              `json:"kind"`
	SubscriptionID string              `json:"subscription_id"`
	Reason         string              `json:"reason"`
	At             time.Time           `json:"at"`
	Status         subscription.Status `json:"status,omitempty"`
	DisabledReason subscription.Reason `json:"disabled_reason,omitempty"`
	PausedUntil    *time.Time          `json:"paused_until,omitempty"`
	FailingSince   *time.Time          `json:"failing_since,omitempty"`
	// For a dead letter:
	EventID    string `json:"event_id,omitempty"`
	Attempts   string `json:"attempts,omitempty"`
	LastStatus string `json:"last_status,omitempty"`
}

// announce publishes a change of a subscription's health to OPS, logs it
// and counts it. Only the replica whose write made the change announces
// it, so each change is announced once.
func (f *Fleet) announce(change string, e registry.Entry, why string) {
	sub := e.Subscription
	ev := opsEvent{
		Kind: change, SubscriptionID: sub.ID, Reason: why, At: f.now().UTC(),
		Status: sub.Status, DisabledReason: sub.DisabledReason,
		PausedUntil: e.Health.PausedUntil, FailingSince: e.Health.FailingSince,
	}
	f.publishOps(natsx.OpsSubject(change, sub.ID), ev)
	f.metrics.changed(change)
	attrs := []any{"subscription_id", sub.ID, "change", change, "reason", why, "status", string(sub.Status)}
	if e.Health.PausedUntil != nil {
		attrs = append(attrs, "paused_until", e.Health.PausedUntil.UTC().Format(time.RFC3339))
	}
	if sub.DisabledReason != "" {
		attrs = append(attrs, "disabled_reason", string(sub.DisabledReason))
	}
	f.log.Warn("subscription "+change, attrs...)
}

// StatusChanged announces a status changed through the admin API: enabled
// again ("resumed") or disabled by hand.
func (f *Fleet) StatusChanged(e registry.Entry) {
	switch e.Subscription.Status {
	case subscription.StatusEnabled:
		f.announce(changeResumed, e, "enabled through the admin API")
	case subscription.StatusDisabled:
		f.announce(changeDisabled, e, "disabled through the admin API")
	}
}

// announceDeadLetter publishes ops.deadletter.<owner> for a dead letter.
func (f *Fleet) announceDeadLetter(owner string, s consume.Settled) {
	if owner == "" {
		return
	}
	h := s.Decision.Headers
	f.publishOps(natsx.OpsDeadletterSubject(owner), opsEvent{
		Kind: "deadletter", SubscriptionID: owner, Reason: s.Decision.Reason, At: f.now().UTC(),
		EventID: h.Get(consume.HeaderEventID), Attempts: h.Get(consume.HeaderAttempts), LastStatus: h.Get(consume.HeaderLastStatus),
	})
}

// publishOps publishes without waiting: an operational event lost in a
// NATS outage costs a notification, never a webhook.
func (f *Fleet) publishOps(subject string, ev opsEvent) {
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	msg := nats.NewMsg(subject)
	msg.Data = b
	if _, err := f.js.PublishMsgAsync(msg, jetstream.WithExpectStream(natsx.StreamOps)); err != nil {
		f.log.Debug("OPS event not published", "subject", subject, "error", err)
	}
}
