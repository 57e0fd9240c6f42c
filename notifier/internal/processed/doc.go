// Package processed is the notifier's idempotency store: the KV bucket
// notifier_processed, keyed by event id, whose value says whether the
// confirmation email of that event is being sent ("claimed") or was sent
// ("done"). JetStream's duplicate window is short and forgets the ids of
// deleted work-queue messages; this store is the lasting guarantee that a
// customer gets one email per event.
package processed
