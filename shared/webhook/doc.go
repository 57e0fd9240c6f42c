// Package webhook signs and verifies webhooks as Standard Webhooks v1
// (HMAC-SHA256 over "id.timestamp.body", carried in the webhook-id,
// webhook-timestamp and webhook-signature headers) on raw request bytes.
package webhook
