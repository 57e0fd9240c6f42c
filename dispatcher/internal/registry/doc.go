// Package registry keeps the webhook subscriptions in the NATS KV bucket
// "subscriptions": key = subscription id, value = the subscription's JSON
// with its signing secrets encrypted (AES-256-GCM under SECRETS_KEY, bound
// to the subscription's id). It creates, reads, lists, changes (with the KV
// revision for optimistic concurrency), deletes and rotates; it ensures the
// fixed subscription of NOTIFICATION_WEBHOOK_URL; and it streams every
// change to every dispatcher replica through a KV watch.
package registry
