package natsx

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the webhook platform's NATS objects, fixed by the design.
const (
	StreamAttempts     = "DELIVERY_ATTEMPTS"
	StreamRedeliveries = "REDELIVERIES"
	StreamOps          = "OPS"

	// ConsumerRedeliver delivers replayed dead letters and recovered
	// events, for every subscription.
	ConsumerRedeliver = "redeliver"

	// BucketJobs holds the state of recovery jobs, key = job id.
	BucketJobs = "jobs"
)

// SubscriptionConsumerPrefix starts the name of a subscription's consumer
// on ORDERS: wh-<subscription id>.
const SubscriptionConsumerPrefix = "wh-"

// SubscriptionConsumer is the durable consumer on ORDERS of subscription id.
func SubscriptionConsumer(id string) string { return SubscriptionConsumerPrefix + id }

// AttemptSubject is where one HTTP attempt of event eventID to subscription
// subID is logged.
func AttemptSubject(subID, eventID string) string { return "attempts." + subID + "." + eventID }

// AttemptFilter selects every attempt of subscription subID.
func AttemptFilter(subID string) string { return "attempts." + subID + ".>" }

// EventAttemptFilter selects every subscription's attempts of eventID.
func EventAttemptFilter(eventID string) string { return "attempts.*." + eventID }

// RedeliverSubject is where an event to be delivered again to subscription
// subID waits.
func RedeliverSubject(subID, eventID string) string { return "redeliver." + subID + "." + eventID }

// DeadletterFilter selects the dead letters of owner (a subscription id,
// or a consumer's name).
func DeadletterFilter(owner string) string { return "deadletter." + owner + ".>" }

// OpsSubject is where an operational event of kind (disabled, paused,
// resumed, failing, recovered) about subscription subID goes.
func OpsSubject(kind, subID string) string { return "ops.subscription." + kind + "." + subID }

// OpsDeadletterSubject announces a dead letter of owner.
func OpsDeadletterSubject(owner string) string { return "ops.deadletter." + owner }

// DefaultAttemptLogMaxAge is how long attempts are kept unless
// ATTEMPT_LOG_MAX_AGE says otherwise.
const DefaultAttemptLogMaxAge = 30 * 24 * time.Hour

// AttemptsStream logs one message per HTTP attempt of a webhook, for the
// admin API's attempt log and for operators: `nats stream view
// DELIVERY_ATTEMPTS --subject 'attempts.<subscription>.>'`.
func AttemptsStream(replicas int, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamAttempts,
		Description: "one message per webhook HTTP attempt",
		Subjects:    []string{"attempts.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      maxAge,
		Replicas:    replicas,
	}
}

// RedeliveriesStream holds events to be delivered once more to one
// subscription: replayed dead letters and recovered time ranges. It is a
// work queue: a message leaves it when it is delivered or dead-lettered.
func RedeliveriesStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamRedeliveries,
		Description: "replayed dead letters and recovered events, per subscription",
		Subjects:    []string{"redeliver.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  DuplicateWindow,
		Replicas:    replicas,
	}
}

// OpsStream keeps the operational events: a subscription disabled, paused
// by its circuit breaker, resumed, failing, recovered; a dead letter.
func OpsStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamOps,
		Description: "operational events: subscriptions disabled, paused, resumed; dead letters",
		Subjects:    []string{"ops.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Replicas:    replicas,
	}
}

// JobsBucket holds recovery jobs and their progress, shared by every
// dispatcher replica; a job's record lives a week.
func JobsBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketJobs,
		Description: "recovery jobs and their progress",
		TTL:         7 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}
