// Package chaos is a black-box reliability harness for the whole pipeline.
// It builds the orders, dispatcher and notifier binaries and a nats-server,
// runs them as separate processes on 127.0.0.1 with file storage, creates
// orders continuously like a careful client (an Idempotency-Key per order,
// retried until it is answered 201), and meanwhile injects faults at moments
// drawn from a seed: kill -9 and SIGTERM of each service, kill -9 of
// nats-server, a webhook receiver answering 500 or 503 or hanging, a mail
// server refusing or stalling. Then it lets the pipeline drain and checks
// that every acknowledged order produced exactly one email.
//
// The same seed and settings give the same fault schedule; the moments the
// processes reach while a fault hits them are not reproducible, which is the
// point of running the harness often.
package chaos
