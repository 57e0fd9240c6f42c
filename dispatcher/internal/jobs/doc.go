// Package jobs runs recovery jobs (POST /v1/subscriptions/{id}/recover):
// every event of ORDERS in a time range that matches a subscription's
// event types is enqueued to REDELIVERIES for that subscription. A job's
// state lives in the jobs bucket, so that any dispatcher replica can
// answer for it; the replica running it holds a lease on its record and
// writes its progress every second, and when that replica dies another
// takes the job over and goes on from the last position written. The
// redeliveries the redeliver consumer delivers are counted back into the
// job through Delivered.
package jobs
