// Package email turns accepted order.paid events into confirmation emails:
// a worker pulls them from the NOTIFICATIONS stream, claims each event id in
// the idempotency store, sends through a Sender and acknowledges only after
// the email is out and recorded.
package email
