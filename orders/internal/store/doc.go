// Package store keeps orders in the JetStream KV bucket "orders" and
// publishes their events to the ORDERS stream.
package store
