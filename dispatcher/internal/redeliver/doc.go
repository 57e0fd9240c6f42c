// Package redeliver is the contract of the REDELIVERIES stream: an event to
// be delivered once more to one subscription, because its dead letter was
// replayed or because a recovery job found it in a time range. The
// message's subject is redeliver.<subscription id>.<event id>, its body the
// original event, byte for byte, and its headers say where it came from.
package redeliver
