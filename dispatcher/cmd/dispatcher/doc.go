// Command dispatcher delivers the order events of the ORDERS stream as
// signed webhooks (Standard Webhooks v1), retrying through JetStream
// redelivery and copying what cannot be delivered to DEADLETTER. It is
// configured by environment variables and serves /healthz and /readyz.
package main
