// Package platform provisions the NATS objects of the webhook platform
// that the dispatcher owns besides ORDERS, DEADLETTER and the
// subscriptions bucket: the attempt log, the redelivery queue, the
// operational events and the recovery jobs. Their names and settings are
// declared once, in shared/natsx; this is the one place that creates
// them.
package platform

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// Objects are the streams and buckets Provision creates.
func Objects(replicas int, attemptMaxAge time.Duration) ([]jetstream.StreamConfig, []jetstream.KeyValueConfig) {
	return []jetstream.StreamConfig{
			natsx.AttemptsStream(replicas, attemptMaxAge),
			natsx.RedeliveriesStream(replicas),
			natsx.OpsStream(replicas),
		}, []jetstream.KeyValueConfig{
			natsx.JobsBucket(replicas),
		}
}

// Provision creates or updates DELIVERY_ATTEMPTS (keeping attempts for
// attemptMaxAge), REDELIVERIES, OPS and the jobs bucket. It is safe to
// call at every start, from every replica.
func Provision(ctx context.Context, js jetstream.JetStream, replicas int, attemptMaxAge time.Duration) error {
	streams, buckets := Objects(replicas, attemptMaxAge)
	return natsx.Provision(ctx, js, streams, buckets)
}

// Requirement names what Provision creates, for a readiness check.
func Requirement() natsx.Requirement {
	streams, buckets := Objects(1, time.Hour)
	var req natsx.Requirement
	for _, s := range streams {
		req.Streams = append(req.Streams, s.Name)
	}
	for _, b := range buckets {
		req.Buckets = append(req.Buckets, b.Bucket)
	}
	return req
}
