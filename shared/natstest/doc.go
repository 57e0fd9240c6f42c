// Package natstest runs a real, embedded JetStream nats-server for tests:
// random port on 127.0.0.1, a temporary store, stopped on cleanup and
// restartable on the same store so that tests can prove what survives.
// Options set it up as production servers are: TLS and mutual TLS from a
// certificate authority made at test time, users with passwords, NKeys,
// and operator (JWT) mode for .creds files.
package natstest
