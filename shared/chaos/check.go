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

// notifierClaimTTL is how long the claim of a notifier that died while
// sending lives. A redelivery of the same message takes the claim over
// after the notifier's AckWait; only another message for the same event
// waits for the whole TTL.
const notifierClaimTTL = smtpTimeout + 20*time.Second + time.Minute

// backlog is what JetStream still has to do.
type backlog struct {
	dispatcherPending, dispatcherAckPending, notifications uint64
}

func (b backlog) empty() bool {
	return b.dispatcherPending == 0 && b.dispatcherAckPending == 0 && b.notifications == 0
}

func (b backlog) String() string {
	return fmt.Sprintf("dispatcher_pending=%d dispatcher_ack_pending=%d notifications=%d",
		b.dispatcherPending, b.dispatcherAckPending, b.notifications)
}

// readBacklog reads the dispatcher consumer's pending and unacknowledged
// events and the messages left in NOTIFICATIONS, a work queue, where a
// message stays until the email worker acknowledges it.
func (h *harness) readBacklog(ctx context.Context) (backlog, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cons, err := h.js.Consumer(ctx, natsx.StreamOrders, natsx.ConsumerDispatcher)
	if err != nil {
		return backlog{}, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return backlog{}, err
	}
	st, err := h.js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		return backlog{}, err
	}
	si, err := st.Info(ctx)
	if err != nil {
		return backlog{}, err
	}
	return backlog{ci.NumPending, uint64(ci.NumAckPending), si.State.Msgs}, nil
}

// drainAndCheck waits, within the drain timeout, until every acknowledged
// order has an email and JetStream has nothing pending: from then on no
// further email can appear, including the late duplicate a crash between
// sending and recording causes, since its message stays in NOTIFICATIONS
// until it is sent again. Then it counts.
func (h *harness) drainAndCheck(ctx context.Context, gen *loadGen) error {
	orders := gen.snapshot()
	acked := map[string]time.Time{}
	for _, o := range orders {
		if o.orderID != "" {
			acked[o.orderID] = o.acked
		}
	}
	began := time.Now()
	h.log.printf("draining: waiting up to %s for every acknowledged order's email and an empty backlog", h.cfg.DrainTimeout)
	deadline := began.Add(h.cfg.DrainTimeout)
	nextReport := began.Add(progressEvery)
	var last backlog
	var lastErr error
	claimNoteAfter := 25 * time.Second
	for {
		emailed := map[string]bool{}
		for _, m := range h.mail.Messages() {
			emailed[emailOrderID(m)] = true
		}
		missing := 0
		for id := range acked {
			if !emailed[id] {
				missing++
			}
		}
		last, lastErr = h.readBacklog(ctx)
		if missing == 0 && lastErr == nil && last.empty() {
			h.log.printf("drained in %s", time.Since(began).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(nextReport) {
			h.log.printf("draining: %d acknowledged orders without email, %s", missing, describe(last, lastErr))
			if lastErr == nil && last.notifications > 0 && time.Since(began) > claimNoteAfter {
				h.log.printf("draining: an email waiting this long is most likely held by the claim of a notifier killed while sending; a redelivery takes it over, at the latest when it expires %s after it was taken", notifierClaimTTL)
				claimNoteAfter = h.cfg.DrainTimeout
			}
			nextReport = nextReport.Add(progressEvery)
		}
		if time.Now().After(deadline) {
			h.log.printf("drain timed out after %s: %d acknowledged orders without email, %s",
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
	h.count(ctx, orders)
	var err error
	if h.res.DeadLetters, err = h.deadLetters(ctx); err != nil {
		return fmt.Errorf("reading DEADLETTER: %w", err)
	}
	for _, d := range h.res.DeadLetters {
		h.log.printf("dead letter: %s", d)
	}
	h.report()
	return nil
}

func describe(b backlog, err error) string {
	if err != nil {
		return "backlog unknown: " + err.Error()
	}
	return b.String()
}

// count compares the acknowledged orders with the emails.
func (h *harness) count(ctx context.Context, orders []placed) {
	r := h.res
	acked := map[string]time.Time{}
	for _, o := range orders {
		switch {
		case o.orderID != "":
			acked[o.orderID] = o.acked
		case o.rejected != "":
			r.Rejected++
			h.log.printf("order %s was answered %s", o.key, o.rejected)
		default:
			r.Unresolved++
			h.log.printf("order %s never got a 201 in %d attempts; last: %s", o.key, o.attempts, o.lastErr)
		}
	}
	r.Orders, r.Acked = len(orders), len(acked)

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
	for id, at := range acked {
		if perOrder[id] == 0 {
			r.LostOrders = append(r.LostOrders, id)
			continue
		}
		// A 201 lost on the way and then replayed can come after the
		// email; such an order counts as instant.
		latencies = append(latencies, max(first[id].Sub(at), 0))
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

// deadLetters reads every message of the DEADLETTER stream.
func (h *harness) deadLetters(ctx context.Context) ([]DeadLetter, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, DeadLetter{
			Sequence:   seq,
			Subject:    m.Subject,
			EventID:    header(m.Header, "Jethook-Event-Id"),
			Attempts:   header(m.Header, "Jethook-Attempts"),
			LastStatus: header(m.Header, "Jethook-Last-Status"),
			LastError:  header(m.Header, "Jethook-Last-Error"),
		})
	}
	return out, nil
}

// report prints the counts.
func (h *harness) report() {
	r := h.res
	var kinds []string
	for _, k := range sortedKinds(r.ByKind) {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, r.ByKind[k]))
	}
	h.log.printf("faults injected %d of %d planned: %s", r.Faults, r.Planned, strings.Join(kinds, " "))
	h.log.printf("orders=%d acked=%d unresolved=%d rejected=%d emails=%d lost=%d duplicated=%d unexpected=%d unknown=%d",
		r.Orders, r.Acked, r.Unresolved, r.Rejected, r.Emails, r.Lost, r.Duplicated, r.Unexpected, r.Unknown)
	h.log.printf("201 to email: median %s, longest %s; drain took %s",
		r.MedianLatency.Round(time.Millisecond), r.MaxLatency.Round(time.Millisecond), r.Drain.Round(10*time.Millisecond))
	for _, n := range r.Notes {
		h.log.printf("note: %s", n)
	}
}
