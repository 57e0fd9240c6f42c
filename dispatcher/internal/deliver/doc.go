// Package deliver turns the order events in the ORDERS stream into signed
// webhooks. A Dispatcher pulls from the durable "dispatcher" consumer, posts
// each event body unchanged to the receiver, and settles the message from
// the outcome: acknowledged when delivered, redelivered by JetStream after
// an exponential backoff when the attempt failed, copied to DEADLETTER and
// terminated when no attempt can succeed.
package deliver
