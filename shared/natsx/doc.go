// Package natsx connects to NATS and provisions, idempotently, the streams
// and key-value buckets that the services share. The names here are part of
// the operators' contract: they are what `nats stream ls` shows.
package natsx
