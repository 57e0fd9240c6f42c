// Package attempt is the dispatcher's attempt log: one message in the
// DELIVERY_ATTEMPTS stream per HTTP attempt of a webhook, under
// attempts.<subscription id>.<event id>, for the admin API and for
// operators reading the stream with the nats CLI.
package attempt
