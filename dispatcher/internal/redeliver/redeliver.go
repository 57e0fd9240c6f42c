package redeliver

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/tracing"
)

// Headers of a redelivery besides the consume.HeaderOriginal* ones, which
// name the event's place in ORDERS.
const (
	// HeaderSource is "replay" or "recover".
	HeaderSource = "Jethook-Source"
	// HeaderJob names the recovery job a redelivery belongs to.
	HeaderJob = "Jethook-Job"
)

// Origin is where an event was first published.
type Origin struct {
	Subject  string // orders.paid.<order id>
	Stream   string // ORDERS
	Sequence uint64
	// Header is the original's headers, or nil; the redelivery continues
	// the trace they carry, so a replay shows in the order's own trace.
	Header nats.Header
}

// Message builds the redelivery of the event body, with eventID, to
// subscription subID. msgID deduplicates it within JetStream's window: a
// replay request sent twice, or a recovery job resumed, does not deliver
// twice. job is empty for a replay.
func Message(subID, eventID string, body []byte, from Origin, source, job, msgID string) *nats.Msg {
	m := nats.NewMsg(natsx.RedeliverSubject(subID, eventID))
	m.Data = body
	m.Header.Set(consume.HeaderOriginalSubject, from.Subject)
	m.Header.Set(consume.HeaderOriginalStream, from.Stream)
	m.Header.Set(consume.HeaderOriginalSequence, strconv.FormatUint(from.Sequence, 10))
	m.Header.Set(consume.HeaderEventID, eventID)
	m.Header.Set(HeaderSource, source)
	if job != "" {
		m.Header.Set(HeaderJob, job)
	}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	tracing.CopyContext(m.Header, from.Header)
	return m
}

// Parse reads a redelivery's subject: the subscription and the event.
func Parse(subject string) (subID, eventID string, ok bool) {
	const prefix = "redeliver."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", "", false
	}
	rest := subject[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			if i == 0 || i == len(rest)-1 {
				return "", "", false
			}
			return rest[:i], rest[i+1:], true
		}
	}
	return "", "", false
}
