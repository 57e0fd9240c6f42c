package consume

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// Headers of a dead-letter copy, telling an operator where the message came
// from and why it was given up. Handlers add their own (Jethook-Last-Status,
// Jethook-Smtp-Code, …) through Decision.Headers.
const (
	HeaderOriginalSubject  = "Jethook-Original-Subject"
	HeaderOriginalStream   = "Jethook-Original-Stream"
	HeaderOriginalSequence = "Jethook-Original-Sequence"
	HeaderSubscription     = "Jethook-Subscription"
	HeaderAttempts         = "Jethook-Attempts"
	HeaderReason           = "Jethook-Reason"
	HeaderLastStatus       = "Jethook-Last-Status"
	HeaderLastError        = "Jethook-Last-Error"
	HeaderEventID          = "Jethook-Event-Id"
	HeaderDeadLetteredAt   = "Jethook-Dead-Lettered-At"
)

// maxHeaderLen keeps a header readable in `nats stream view`.
const maxHeaderLen = 512

// deadLetter copies m to DEADLETTER under deadletter.<owner>.<subject> and
// waits for the PubAck. The copy's Nats-Msg-Id names the owner and the
// original message, so that a copy published again after a crash between
// publish and term is deduplicated, while the same event dead-lettered by
// another subscription, or again after a replay, is kept. A message that
// is itself a redelivery (it carries Jethook-Original-Subject) keeps the
// origin it names: its dead letter goes where the first one went.
func (r *Runner) deadLetter(ctx context.Context, m *Msg, d Decision) error {
	owner := cmp.Or(d.Owner, r.owner())
	subject, stream, seq := m.Subject(), m.Meta.Stream, strconv.FormatUint(m.Meta.Sequence.Stream, 10)
	if h := m.Headers(); h.Get(HeaderOriginalSubject) != "" {
		subject, stream, seq = h.Get(HeaderOriginalSubject), h.Get(HeaderOriginalStream), h.Get(HeaderOriginalSequence)
	}
	cp := nats.NewMsg(natsx.DeadletterSubject(owner, subject))
	cp.Data = m.Data()
	// The original's own headers travel along (a trace context, say), but
	// not its JetStream ones: its Nats-Msg-Id would deduplicate the copy.
	for k, v := range m.Headers() {
		if !strings.HasPrefix(k, "Nats-") {
			cp.Header[k] = v
		}
	}
	h := cp.Header
	h.Set(HeaderOriginalSubject, subject)
	h.Set(HeaderOriginalStream, stream)
	h.Set(HeaderOriginalSequence, seq)
	h.Set(HeaderSubscription, owner)
	h.Set(HeaderAttempts, strconv.FormatUint(m.Meta.NumDelivered, 10))
	h.Set(HeaderReason, HeaderValue(d.Reason))
	if d.Err != nil {
		h.Set(HeaderLastError, HeaderValue(d.Err.Error()))
	}
	h.Set(HeaderDeadLetteredAt, r.now().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	for k, v := range d.Headers {
		h[k] = v
	}
	// The id names the message actually settled, so that a replayed
	// event that fails again is kept beside its first dead letter.
	h.Set(jetstream.MsgIDHeader, owner+":"+m.Meta.Stream+":"+strconv.FormatUint(m.Meta.Sequence.Stream, 10))
	if _, err := r.cfg.JS.PublishMsg(ctx, cp, jetstream.WithExpectStream(natsx.StreamDeadletter)); err != nil {
		return fmt.Errorf("publish dead-letter copy: %w", err)
	}
	return nil
}

// HeaderValue makes s safe and short enough for a NATS header: no line
// breaks or other control characters, at most 512 bytes of valid UTF-8.
func HeaderValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxHeaderLen {
		s = strings.ToValidUTF8(s[:maxHeaderLen], "")
	}
	return s
}
