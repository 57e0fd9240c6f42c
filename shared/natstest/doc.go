// Package natstest runs a real, embedded JetStream nats-server for tests:
// random port on 127.0.0.1, a temporary store, stopped on cleanup and
// restartable on the same store so that tests can prove what survives.
package natstest
