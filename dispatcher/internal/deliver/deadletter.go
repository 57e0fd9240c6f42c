package deliver

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// DeadletterPrefix is put before the original subject of a dead-lettered
// event, so "orders.paid.<id>" becomes "deadletter.orders.paid.<id>".
const DeadletterPrefix = "deadletter."

// Headers of a dead-letter copy, telling an operator where the event came
// from and why it was given up.
const (
	HeaderOriginalSubject  = "Jethook-Original-Subject"
	HeaderOriginalStream   = "Jethook-Original-Stream"
	HeaderOriginalSequence = "Jethook-Original-Sequence"
	HeaderSubscription     = "Jethook-Subscription"
	HeaderAttempts         = "Jethook-Attempts"
	HeaderLastStatus       = "Jethook-Last-Status"
	HeaderLastError        = "Jethook-Last-Error"
	HeaderEventID          = "Jethook-Event-Id"
)

// maxErrorHeaderLen keeps the last error readable in `nats stream view`.
const maxErrorHeaderLen = 512

// deadLetter copies msg to the DEADLETTER stream and waits for the PubAck.
// The copy's Nats-Msg-Id is the event id and the original stream sequence,
// so that a copy published again after a crash between publish and term is
// deduplicated, while a replayed event that fails again is kept. A body
// without an event id uses the stream name in its place.
func (d *Dispatcher) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, a attempt) error {
	seq := strconv.FormatUint(meta.Sequence.Stream, 10)
	copyMsg := nats.NewMsg(DeadletterPrefix + msg.Subject())
	copyMsg.Data = msg.Data()
	h := copyMsg.Header
	h.Set(HeaderOriginalSubject, msg.Subject())
	h.Set(HeaderOriginalStream, meta.Stream)
	h.Set(HeaderOriginalSequence, seq)
	h.Set(HeaderSubscription, meta.Consumer)
	h.Set(HeaderAttempts, strconv.FormatUint(a.attempts, 10))
	h.Set(HeaderLastStatus, strconv.Itoa(a.status))
	h.Set(HeaderLastError, headerValue(a.err.Error()))
	h.Set(HeaderEventID, a.eventID)
	dedupKey := a.eventID
	if dedupKey == "" {
		dedupKey = meta.Stream
	}
	h.Set(jetstream.MsgIDHeader, dedupKey+":"+seq)

	if _, err := d.js.PublishMsg(ctx, copyMsg, jetstream.WithExpectStream(natsx.StreamDeadletter)); err != nil {
		return fmt.Errorf("publish dead-letter copy: %w", err)
	}
	return nil
}

// headerValue makes s safe and short enough for a NATS header: no line
// breaks or other control characters, at most maxErrorHeaderLen bytes.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxErrorHeaderLen {
		s = strings.ToValidUTF8(s[:maxErrorHeaderLen], "")
	}
	return s
}
