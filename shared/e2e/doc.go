// Package e2e holds black-box tests of the whole pipeline: they build the
// real orders, dispatcher and notifier binaries, run them as separate
// processes against an embedded nats-server, an SMTP server and a fault
// proxy on 127.0.0.1, and check that every acknowledged order becomes
// exactly one email, and that subscriptions made through the admin API
// deliver to verifying receivers on 127.0.0.1 as the contract says.
package e2e
