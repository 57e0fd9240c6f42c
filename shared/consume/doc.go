// Package consume is the one JetStream consumer runtime of jethook. Every
// durable consumer (the dispatcher's webhook deliveries, the notifier's
// email worker, one consumer per subscription) runs on a Runner: it pulls
// only as many messages as it has free workers, marks each one in progress
// when a worker takes it and as a heartbeat while the work runs, bounds the
// work with a timeout, settles the message as the handler decided (ack,
// retry after a delay, or dead-letter: copy to DEADLETTER, then terminate),
// provisions the consumer again when it or its stream vanished, and lets
// in-flight work finish within a grace period at shutdown.
//
// A handler does its work and returns a Decision; it never acks, naks or
// terminates a message itself. Two hand-grown loops drift apart, and their
// differences become bugs: that is why there is only this one.
package consume
