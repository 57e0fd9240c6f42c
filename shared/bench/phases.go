package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/webhook"

	"github.com/jethook/jethook/shared/testkit"
)

// mailDomain is the domain of every customer address of the load. Each
// order's address names its phase and number, tag-n@bench.example.com, so
// that an email is matched to its POST without reading its content.
const mailDomain = "bench.example.com"

// pollEvery spaces the checks of a wait.
const pollEvery = 200 * time.Millisecond

// orderRequest returns the POST /orders requests of a phase, each with its
// own customer address and, unless the run says otherwise, its own
// Idempotency-Key, as a careful client sends.
func (h *harness) orderRequest(tag string) request {
	return func(buf []byte, n int) []byte {
		email := tag + "-" + strconv.Itoa(n) + "@" + mailDomain
		body := []byte(`{"product_name":"Bench","quantity":2,"price_per_item":"10.50","customer_email":"` + email + `"}`)
		if h.cfg.NoIdempotencyKey {
			return post(buf, h.ordersAddr, "/orders", body)
		}
		return post(buf, h.ordersAddr, "/orders", body, "Idempotency-Key", "bench-"+tag+"-"+strconv.Itoa(n))
	}
}

// parseRecipient returns the phase tag and order number of a load address.
func parseRecipient(addr string) (string, int, bool) {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || domain != mailDomain {
		return "", 0, false
	}
	tag, num, ok := strings.Cut(local, "-")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return "", 0, false
	}
	return tag, n, true
}

// deliveries returns, for each order number of the phase tag, when the
// relay accepted each of its emails.
func (h *harness) deliveries(tag string) map[int][]time.Time {
	got := map[int][]time.Time{}
	if h.logged != nil {
		for _, r := range h.logged.read() {
			if t, n, ok := parseRecipient(r.to); ok && t == tag {
				got[n] = append(got[n], r.at)
			}
		}
		return got
	}
	for _, m := range h.mail.Messages() {
		for _, to := range m.To {
			if t, n, ok := parseRecipient(to); ok && t == tag {
				got[n] = append(got[n], m.Received)
			}
		}
	}
	return got
}

// sent is how many emails went out so far: what the relay was handed, or
// what the notifier logged.
func (h *harness) sent() int {
	if h.logged != nil {
		return len(h.logged.read())
	}
	return h.mail.Attempts()
}

// await waits up to timeout until the relay has accepted an email for each
// order of ok, and returns what it accepted for them. The relay's attempt
// counter, cheap to read, decides when its list is worth reading.
func (h *harness) await(ctx context.Context, tag string, ok []sample, timeout time.Duration) (emailOutcome, error) {
	h.emailed += len(ok)
	deadline := time.Now().Add(timeout)
	for {
		if h.sent() >= h.emailed-h.missing {
			if got := h.deliveries(tag); len(got) >= len(ok) {
				return outcome(ok, got), nil
			}
		}
		if time.Now().After(deadline) {
			o := outcome(ok, h.deliveries(tag))
			h.missing += o.missing
			h.printf("%s: %d of %d emails within %s", tag, o.emailed, len(ok), timeout)
			return o, nil
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return emailOutcome{}, err
		}
	}
}

// post runs load with the orders of phase tag and returns what it got, the
// orders answered 201, and what each process spent per such order.
func (h *harness) post(tag string, load func(request) *loadResult) (*loadResult, []sample, *cpuUse) {
	cpu0 := h.cpuSample()
	res := load(h.orderRequest(tag))
	ok := res.ok(http.StatusCreated)
	return res, ok, h.cpuSince(cpu0, len(ok))
}

// emailOutcome counts what the relay got for the orders of ok.
type emailOutcome struct {
	orders, emailed, missing, duplicated int
	// first is the first email of each order, by order number.
	first map[int]time.Time
	last  time.Time
}

func outcome(ok []sample, got map[int][]time.Time) emailOutcome {
	o := emailOutcome{orders: len(ok), first: map[int]time.Time{}}
	for _, s := range ok {
		times, found := got[s.n]
		if !found {
			o.missing++
			continue
		}
		o.emailed++
		if len(times) > 1 {
			o.duplicated++
		}
		first := times[0]
		for _, t := range times {
			if t.Before(first) {
				first = t
			}
			if t.After(o.last) {
				o.last = t
			}
		}
		o.first[s.n] = first
	}
	return o
}

func (h *harness) fiberCeiling(ctx context.Context) error {
	if h.cfg.Self == "" {
		h.rep.note("the bare Fiber ceiling needs the tool's own executable; not measured")
		return nil
	}
	var err error
	h.fiber, err = newProc("fiber-ceiling", h.cfg.Self, filepath.Join(h.dir, "logs", "fiber-ceiling.log"), []string{}, "-serve-fiber", h.fiberAddr)
	if err != nil {
		return err
	}
	if err := h.fiber.start(); err != nil {
		return err
	}
	defer func() { _ = h.fiber.stop() }()
	if err := waitListening(ctx, h.fiberAddr, 30*time.Second); err != nil {
		return err
	}
	h.printf("ceiling: bare Fiber handler, c=%d for %s", h.cfg.Concurrency, h.cfg.Duration)
	req := func(buf []byte, n int) []byte {
		return post(buf, h.fiberAddr, "/orders", []byte(`{"product_name":"Bench","quantity":2,"price_per_item":"10.50","customer_email":"fiber-`+strconv.Itoa(n)+`@`+mailDomain+`"}`),
			"Idempotency-Key", "bench-fiber-"+strconv.Itoa(n))
	}
	res := closedLoop(ctx, h.fiberAddr, h.cfg.Concurrency, 1<<30, h.cfg.Duration, req)
	h.rep.fiber = ptr(res.stats(http.StatusCreated))
	return nil
}

func (h *harness) jetstreamCeiling(ctx context.Context) error {
	h.printf("ceiling: JetStream publish with PubAck, c=%d for %s", h.cfg.Concurrency, h.cfg.Duration)
	body, err := sampleEvent("js-0@" + mailDomain).Marshal()
	if err != nil {
		return err
	}
	res, err := publishCeiling(ctx, h.js, h.cfg.Concurrency, h.cfg.Duration, body)
	if err != nil {
		return err
	}
	h.rep.jetstream = ptr(res.stats(200))
	return nil
}

func (h *harness) latency(ctx context.Context) error {
	h.printf("latency: open loop, %g orders/s for %s", h.cfg.Rate, h.cfg.RateDuration)
	res, ok, cpu := h.post("lat", func(req request) *loadResult {
		return openLoop(ctx, h.ordersAddr, h.cfg.Rate, h.cfg.RateDuration, h.cfg.OpenConns, req)
	})
	o, err := h.await(ctx, "lat", ok, h.cfg.WaitTimeout)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, 0, len(ok))
	for _, s := range ok {
		if first, found := o.first[s.n]; found {
			lat = append(lat, first.Sub(s.due))
		} else {
			// An order without an email counts as slower than any other:
			// leaving it out would flatter the percentiles.
			lat = append(lat, never)
		}
	}
	p50, p99 := percentiles(lat)
	h.rep.open = &openFigures{api: res.stats(http.StatusCreated), cpu: cpu, emails: o, p50: p50, p99: p99}
	return nil
}

// never stands for the latency of an email that did not come.
const never = time.Duration(1<<63 - 1)

func (h *harness) endToEnd(ctx context.Context) error {
	h.printf("end to end: up to %d orders at c=%d, for at most %s, then their emails", h.cfg.E2EOrders, h.cfg.Concurrency, h.cfg.Duration)
	start := time.Now()
	res, ok, cpu := h.post("e2e", func(req request) *loadResult {
		return closedLoop(ctx, h.ordersAddr, h.cfg.Concurrency, h.cfg.E2EOrders, h.cfg.Duration, req)
	})
	o, err := h.await(ctx, "e2e", ok, h.cfg.WaitTimeout)
	if err != nil {
		return err
	}
	h.rep.e2e = &e2eFigures{api: res.stats(http.StatusCreated), cpu: cpu, emails: o, elapsed: o.last.Sub(start)}
	return nil
}

func (h *harness) drain(ctx context.Context) error {
	if h.cfg.DownSubscription {
		id, url, err := h.addDownSubscription(ctx)
		if err != nil {
			return err
		}
		h.printf("drain: beside a subscription to %s, which refuses every connection", url)
		// Deleted once the drain is over, so that the phases after it do
		// not share the machine with its retries.
		defer h.deleteSubscription(ctx, id)
	}
	h.printf("drain: dispatcher stopped; %d orders at c=%d", h.cfg.Backlog, h.cfg.Concurrency)
	if err := h.dispatcher.stop(); err != nil {
		return err
	}
	before, err := h.notificationsSeq(ctx)
	if err != nil {
		return err
	}
	res, ok, cpu := h.post("drain", func(req request) *loadResult {
		return closedLoop(ctx, h.ordersAddr, h.cfg.Concurrency, h.cfg.Backlog, h.cfg.DrainTimeout, req)
	})
	d := &drainFigures{api: res.stats(http.StatusCreated), cpu: cpu, backlog: len(ok), besideDown: h.cfg.DownSubscription}
	h.rep.drain = d
	h.printf("drain: %d orders queued; starting the dispatcher", len(ok))
	start := time.Now()
	if err := h.dispatcher.start(); err != nil {
		return err
	}
	deadline := start.Add(h.cfg.DrainTimeout)
	h.emailed += len(ok)
	for {
		if d.webhooksTook == 0 {
			if seq, err := h.notificationsSeq(ctx); err == nil && seq-before >= uint64(len(ok)) {
				d.webhooksTook = time.Since(start)
			}
		}
		if h.sent() >= h.emailed-h.missing {
			if got := h.deliveries("drain"); len(got) >= len(ok) {
				d.emails = outcome(ok, got)
				d.emailsTook = d.emails.last.Sub(start)
				return nil
			}
		}
		if time.Now().After(deadline) {
			d.emails = outcome(ok, h.deliveries("drain"))
			d.emailsTook = time.Since(start)
			d.incomplete = true
			h.missing += d.emails.missing
			if d.webhooksTook == 0 {
				if seq, err := h.notificationsSeq(ctx); err == nil {
					d.webhooksDone = int(seq - before)
				}
			}
			return nil
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return err
		}
	}
}

// addDownSubscription creates, through the dispatcher's admin API, a
// subscription to order.paid at a 127.0.0.1 port where nothing listens,
// and returns its id and URL. Its consumer starts at its creation, so the
// drain's backlog goes to it too.
func (h *harness) addDownSubscription(ctx context.Context) (id, url string, err error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", "", err
	}
	url = "http://127.0.0.1:" + ports[0] + "/down"
	body, err := json.Marshal(map[string]any{"url": url, "event_types": []string{event.TypeOrderPaid}, "description": "jethook-bench: an endpoint that is down"})
	if err != nil {
		return "", "", err
	}
	answer, err := h.admin(ctx, http.MethodPost, "/v1/subscriptions", body, http.StatusCreated)
	if err != nil {
		return "", "", fmt.Errorf("create the down subscription: %w", err)
	}
	var created struct{ ID string }
	if err := json.Unmarshal(answer, &created); err != nil || created.ID == "" {
		return "", "", fmt.Errorf("create the down subscription: no id in %s (%v)", answer, err)
	}
	return created.ID, url, nil
}

// deleteSubscription deletes subscription id, reporting a failure in the
// progress only: the drain was measured.
func (h *harness) deleteSubscription(ctx context.Context, id string) {
	if _, err := h.admin(ctx, http.MethodDelete, "/v1/subscriptions/"+id, nil, http.StatusNoContent); err != nil {
		h.printf("drain: the down subscription %s was not deleted: %v", id, err)
	}
}

// admin makes one request of the dispatcher's admin API and returns the
// answer's body, or an error unless it has status want.
func (h *harness) admin(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+h.dispatcherAddr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+h.adminToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %s: %.1024s", method, path, resp.Status, answer)
	}
	return answer, nil
}

func (h *harness) notifierCeiling(ctx context.Context) error {
	h.printf("ceiling: signed webhook POSTs to the notifier, c=%d for %s", h.cfg.Concurrency, h.cfg.Duration)
	req := func(buf []byte, n int) []byte {
		e := sampleEvent("ntf-" + strconv.Itoa(n) + "@" + mailDomain)
		body, err := e.Marshal()
		if err != nil {
			panic(err) // a fixed, valid event always marshals
		}
		now := time.Now()
		return post(buf, h.notifierAddr, "/webhook/order-paid", body,
			webhook.HeaderID, e.ID,
			webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10),
			webhook.HeaderSignature, webhook.Sign(h.secrets, e.ID, now, body))
	}
	res := closedLoop(ctx, h.notifierAddr, h.cfg.Concurrency, 1<<30, h.cfg.Duration, req)
	h.rep.notifier = ptr(res.stats(http.StatusOK))
	return nil
}

// sampleEvent is a valid order.paid event for email, with fresh ids.
func sampleEvent(email string) event.OrderPaid {
	id, err := event.NewID()
	if err != nil {
		panic(err) // only a broken system random source fails here
	}
	return event.OrderPaid{
		ID: id, Type: event.TypeOrderPaid, Timestamp: time.Now().UTC().Truncate(time.Second),
		Data: event.OrderData{
			OrderID: uuid.Must(uuid.NewV7()).String(), CustomerEmail: email, ProductName: "Bench",
			Quantity: 2, AmountMinor: 2100, Currency: "USD",
		},
	}
}

func ptr[T any](v T) *T { return &v }

// waitReady polls http://addr/readyz until it answers 200.
func waitReady(ctx context.Context, addr string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("http://%s/readyz did not answer 200 within %s", addr, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitListening waits until addr accepts TCP connections.
func waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen within %s", addr, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// freePorts returns n distinct ports of 127.0.0.1 that were free a moment
// ago.
func freePorts(n int) ([]string, error) {
	// Ports below the ephemeral range: a killed process restarts on its
	// port, which an outgoing connection must not have taken meanwhile.
	var ports []string
	for range n {
		port, err := testkit.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, strconv.Itoa(port))
	}
	return ports, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
