package chaos

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/smtptest"
)

// The confirmation email names its order in the Subject, and in the body
// as a fallback.
var (
	subjectOrderID = regexp.MustCompile(`Your order (\S+) is confirmed`)
	bodyOrderID    = regexp.MustCompile(`Order:\s+(\S+)`)
)

// emailOrderID returns the order id an email confirms, or "".
func emailOrderID(m smtptest.Message) string {
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		subject = m.Header.Get("Subject")
	}
	if s := subjectOrderID.FindStringSubmatch(subject); s != nil {
		return s[1]
	}
	if s := bodyOrderID.FindStringSubmatch(m.Body); s != nil {
		return s[1]
	}
	return ""
}

// The leases of the notifier's claims (notifier/internal/config): a claim
// lives claimLease while its email is prepared, and at most commitLease
// from the final dot on (the notifier extends it there only when the wait
// for the answer could outlast it). A notifier that dies leaves its claim to
// lapse; only then may another delivery take the event over.
const (
	claimLease  = 30 * time.Second
	commitLease = smtpDataTimeout + time.Minute
)

// backlog is what JetStream still has to do.
type backlog struct {
	// ordersPending and ordersAckPending are summed over every consumer of
	// ORDERS: the dispatchers' consumer is not named here, so that one
	// consumer per subscription counts the same way.
	ordersPending, ordersAckPending uint64
	notifications                   uint64
}

func (b backlog) empty() bool {
	return b.ordersPending == 0 && b.ordersAckPending == 0 && b.notifications == 0
}

func (b backlog) String() string {
	return fmt.Sprintf("orders_pending=%d orders_ack_pending=%d notifications=%d",
		b.ordersPending, b.ordersAckPending, b.notifications)
}

// readBacklog reads the events that the consumers of ORDERS have not
// delivered or not acknowledged, and the messages left in NOTIFICATIONS, a
// work queue, where a message stays until the email worker acknowledges or
// dead-letters it.
func (h *harness) readBacklog(ctx context.Context) (backlog, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var b backlog
	orders, err := h.js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		return b, err
	}
	consumers := orders.ListConsumers(ctx)
	n := 0
	for ci := range consumers.Info() {
		n++
		b.ordersPending += ci.NumPending
		b.ordersAckPending += uint64(ci.NumAckPending)
	}
	if err := consumers.Err(); err != nil {
		return b, err
	}
	if n == 0 {
		return b, errors.New("ORDERS has no consumer")
	}
	st, err := h.js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		return b, err
	}
	si, err := st.Info(ctx)
	if err != nil {
		return b, err
	}
	b.notifications = si.State.Msgs
	return b, nil
}

// drainAndCheck waits, within the drain timeout, until every acknowledged
// order has an email or a dead letter its refusal explains, and JetStream
// has nothing pending: from then on no further email can appear, including
// the late duplicate a crash between sending and recording causes, since
// its message stays in NOTIFICATIONS until it is sent again. Then it counts.
func (h *harness) drainAndCheck(ctx context.Context, gen *loadGen) error {
	orders := gen.snapshot()
	acked := map[string]time.Time{}
	for _, o := range orders {
		if o.orderID != "" {
			acked[o.orderID] = o.acked
		}
	}
	began := time.Now()
	h.log.printf("draining: waiting up to %s for every acknowledged order's email or dead letter and an empty backlog", h.cfg.DrainTimeout)
	deadline := began.Add(h.cfg.DrainTimeout)
	nextReport := began.Add(progressEvery)
	dls := &deadLetterReader{js: h.js}
	var last backlog
	var lastErr error
	claimNoteAfter := 25 * time.Second
	for {
		emailed := map[string]bool{}
		for _, m := range h.mail.Messages() {
			emailed[emailOrderID(m)] = true
		}
		dlErr := dls.read(ctx)
		explained := h.explainedOrders(dls.all)
		missing := 0
		for id := range acked {
			if !emailed[id] && !explained[id] {
				missing++
			}
		}
		last, lastErr = h.readBacklog(ctx)
		if missing == 0 && lastErr == nil && dlErr == nil && last.empty() {
			h.log.printf("drained in %s", time.Since(began).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(nextReport) {
			h.log.printf("draining: %d acknowledged orders without email or dead letter, %s", missing, describe(last, lastErr))
			if lastErr == nil && last.notifications > 0 && time.Since(began) > claimNoteAfter {
				h.log.printf("draining: an email waiting this long is most likely held by the claim of a notifier killed while sending; "+
					"another delivery takes it over once it lapses, %s after its last renewal, or up to %s after its final dot", claimLease, commitLease)
				claimNoteAfter = h.cfg.DrainTimeout
			}
			nextReport = nextReport.Add(progressEvery)
		}
		if time.Now().After(deadline) {
			h.log.printf("drain timed out after %s: %d acknowledged orders without email or dead letter, %s",
				h.cfg.DrainTimeout, missing, describe(last, lastErr))
			if lastErr != nil || !last.empty() {
				h.res.Backlog = describe(last, lastErr)
			}
			break
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
	h.res.Drain = time.Since(began)
	if err := dls.read(ctx); err != nil {
		return fmt.Errorf("reading DEADLETTER: %w", err)
	}
	h.res.DeadLetters = dls.all
	h.count(ctx, orders)
	h.report()
	return nil
}

func describe(b backlog, err error) string {
	if err != nil {
		return "backlog unknown: " + err.Error()
	}
	return b.String()
}

// refusal reports whether d is the dead letter of an email the relay
// refused for good during a reject window: the email worker's, with a 5xx
// SMTP reply, for an order whose address the relay refused.
func (h *harness) refusal(d DeadLetter) bool {
	h.mu.Lock()
	refused := h.refused[d.CustomerEmail]
	h.mu.Unlock()
	return d.Owner == natsx.ConsumerEmail && len(d.SMTPCode) == 3 && d.SMTPCode[0] == '5' && refused
}

// explainedOrders returns the orders that have a refusal dead letter.
func (h *harness) explainedOrders(dls []DeadLetter) map[string]bool {
	out := map[string]bool{}
	for _, d := range dls {
		if h.refusal(d) {
			out[d.OrderID] = true
		}
	}
	return out
}

// count compares the acknowledged orders with the emails and the dead
// letters. An acknowledged order must have exactly one email, or none and
// a refusal dead letter; every other dead letter is unexplained.
func (h *harness) count(ctx context.Context, orders []placed) {
	r := h.res
	acked := map[string]placed{}
	for _, o := range orders {
		switch {
		case o.orderID != "":
			acked[o.orderID] = o
		case o.rejected != "":
			r.Rejected++
			h.log.printf("order %s was answered %s", o.key, o.rejected)
		default:
			r.Unresolved++
			h.log.printf("order %s never got a 201 in %d attempts; last: %s", o.key, o.attempts, o.lastErr)
		}
	}
	r.Orders, r.Acked = len(orders), len(acked)

	explained := map[string]bool{}
	for _, d := range r.DeadLetters {
		o, ok := acked[d.OrderID]
		switch {
		case h.refusal(d) && (!ok || o.eventID == d.EventID):
			explained[d.OrderID] = true
			h.log.printf("dead letter of a refused email: %s", d)
		default:
			r.UnexplainedDeadLetters = append(r.UnexplainedDeadLetters, d)
			h.log.printf("unexplained dead letter: %s", d)
		}
	}

	emails := h.mail.Messages()
	r.Emails = len(emails)
	perOrder := map[string]int{}
	first := map[string]time.Time{}
	for _, m := range emails {
		id := emailOrderID(m)
		if id == "" {
			r.Unknown++
			h.log.printf("an email names no order: Subject %q", m.Header.Get("Subject"))
			continue
		}
		perOrder[id]++
		if t, ok := first[id]; !ok || m.Received.Before(t) {
			first[id] = m.Received
		}
	}
	var latencies []time.Duration
	for id, o := range acked {
		switch {
		case perOrder[id] > 0:
			// A 201 lost on the way and then replayed can come after the
			// email; such an order counts as instant.
			latencies = append(latencies, max(first[id].Sub(o.acked), 0))
			if explained[id] {
				r.RefusedThenSent++
				h.log.printf("order %s was refused during a reject window and emailed later: its webhook came again and found no email sent", id)
			}
		case explained[id]:
			r.Refused++
		default:
			r.LostOrders = append(r.LostOrders, id)
		}
	}
	for id, n := range perOrder {
		if n > 1 {
			r.DuplicatedOrders = append(r.DuplicatedOrders, id)
			h.log.printf("order %s has %d emails", id, n)
		}
		if _, ok := acked[id]; !ok {
			r.Unexpected++
			known, err := h.orderKnown(ctx, id)
			switch {
			case err != nil:
				r.Unknown++
				h.log.printf("email for order %s without a 201; the orders service could not say whether it knows it: %v", id, err)
			case !known:
				r.Unknown++
				h.log.printf("email for order %s, which the orders service does not know", id)
			default:
				h.log.printf("email for order %s, which exists but whose client never saw its 201", id)
			}
		}
	}
	slices.Sort(r.LostOrders)
	slices.Sort(r.DuplicatedOrders)
	r.Lost, r.Duplicated = len(r.LostOrders), len(r.DuplicatedOrders)
	if len(latencies) > 0 {
		slices.Sort(latencies)
		r.MaxLatency = latencies[len(latencies)-1]
		r.MedianLatency = latencies[len(latencies)/2]
	}
	r.RecipientsRefused = h.mail.Rejected()
	r.RetryAfterAnswers, r.RetryAfterEarly = h.proxy.retryAfterStats()
	for i := range h.proxy.forwarded {
		r.Forwarded = append(r.Forwarded, h.proxy.forwarded[i].Load())
	}
	// Every attempt the log counts is a request the proxy got, or one it
	// recorded without an answer (which may have failed before reaching
	// the proxy): a dispatcher killed mid-request may leave an attempt
	// uncounted, and nothing may count one that made no request.
	attempts, err := h.readAttempts(ctx)
	if err != nil {
		r.AttemptLogError = err.Error()
		return
	}
	for id, a := range attempts {
		if got := h.proxy.receivedOf(id); a.highest > uint64(got)+a.unanswered {
			r.OvercountedAttempts = append(r.OvercountedAttempts, id)
			h.log.printf("event %s: attempt %d in the attempt log, %d webhooks at the receiver, %d attempts without an answer",
				id, a.highest, got, a.unanswered)
		}
	}
	slices.Sort(r.OvercountedAttempts)
}

// orderKnown asks the orders service whether it has the order.
func (h *harness) orderKnown(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.ordersURL+"/orders/"+id, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("GET /orders/%s answered %d", id, resp.StatusCode)
}

// deadLetterReader reads the DEADLETTER stream, each message once.
type deadLetterReader struct {
	js   jetstream.JetStream
	next uint64 // the first sequence not read yet
	all  []DeadLetter
}

// read appends the dead letters stored since the last read.
func (d *deadLetterReader) read(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := d.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	for seq := max(d.next, info.State.FirstSeq); info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			d.next = seq + 1
			continue
		}
		if err != nil {
			return err
		}
		dl := DeadLetter{
			Sequence:   seq,
			Subject:    m.Subject,
			Owner:      header(m.Header, "Jethook-Subscription"),
			EventID:    header(m.Header, "Jethook-Event-Id"),
			Reason:     header(m.Header, "Jethook-Reason"),
			Attempts:   header(m.Header, "Jethook-Attempts"),
			LastStatus: header(m.Header, "Jethook-Last-Status"),
			LastError:  header(m.Header, "Jethook-Last-Error"),
			SMTPCode:   header(m.Header, "Jethook-Smtp-Code"),
		}
		// The body is the event, which names the order and its customer.
		if ev, err := event.Decode(m.Data); err == nil {
			dl.OrderID, dl.CustomerEmail = ev.Data.OrderID, ev.Data.CustomerEmail
		}
		d.all = append(d.all, dl)
		d.next = seq + 1
	}
	return nil
}

// report prints the counts.
func (h *harness) report() {
	r := h.res
	var kinds []string
	for _, k := range sortedKinds(r.ByKind) {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, r.ByKind[k]))
	}
	h.log.printf("faults injected %d of %d planned: %s", r.Faults, r.Planned, strings.Join(kinds, " "))
	h.log.printf("orders=%d acked=%d unresolved=%d rejected=%d emails=%d lost=%d duplicated=%d refused=%d unexpected=%d unknown=%d",
		r.Orders, r.Acked, r.Unresolved, r.Rejected, r.Emails, r.Lost, r.Duplicated, r.Refused, r.Unexpected, r.Unknown)
	h.log.printf("dead letters: %d, %d of them refusals (the relay refused %d recipients with 550; %d of those orders were emailed later), %d unexplained",
		len(r.DeadLetters), len(r.DeadLetters)-len(r.UnexplainedDeadLetters), r.RecipientsRefused, r.RefusedThenSent, len(r.UnexplainedDeadLetters))
	h.log.printf("Retry-After: %d answers, %d webhooks retried sooner than asked", r.RetryAfterAnswers, len(r.RetryAfterEarly))
	var fwd []string
	for i, n := range r.Forwarded {
		fwd = append(fwd, fmt.Sprintf("notifier-%d=%d", i+1, n))
	}
	h.log.printf("webhooks forwarded by the proxy: %s", strings.Join(fwd, " "))
	h.log.printf("201 to email: median %s, longest %s; drain took %s",
		r.MedianLatency.Round(time.Millisecond), r.MaxLatency.Round(time.Millisecond), r.Drain.Round(10*time.Millisecond))
	for _, n := range r.Notes {
		h.log.printf("note: %s", n)
	}
}
