package chaos

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

// proxyMode is how the fault proxy answers the dispatcher.
type proxyMode int32

const (
	// passThrough forwards every webhook to a notifier.
	passThrough proxyMode = iota
	// answer500 fails without forwarding, as a receiver with a bug does.
	answer500
	// answer503 fails without forwarding, with Retry-After, as an
	// overloaded receiver does.
	answer503
	// answer429 fails without forwarding, with Retry-After, as a receiver
	// that limits its callers' rate does.
	answer429
	// forwardAndHang forwards, so the notifier accepts the event, and then
	// does not answer until the dispatcher gives up: the dispatcher must
	// retry and the notifier must recognise the retry as a duplicate.
	forwardAndHang
)

// retryAfter is what the proxy's 503 and 429 answers ask for: at least as
// long as the dispatcher's first backoff steps, so that a dispatcher that
// took Retry-After for less than a floor would be seen retrying sooner.
var retryAfter = map[proxyMode]time.Duration{answer503: time.Second, answer429: 2 * time.Second}

// proxy stands in front of the notifiers' webhook endpoints, as a load
// balancer does: it spreads the webhooks over them in turn and, when one
// does not answer (stopped, killed), tries the next. The dispatchers'
// NOTIFICATION_WEBHOOK_URL points at it. Resending a webhook that a dying
// notifier may have taken is safe, since the notifiers drop duplicates.
type proxy struct {
	targets []string
	next    atomic.Uint64
	mode    atomic.Int32
	srv     *http.Server
	client  *http.Client
	// forwarded counts webhooks handed to each target.
	forwarded []atomic.Int64
	// failed counts webhooks answered with a fault.
	failed atomic.Int64

	mu sync.Mutex
	// notBefore is, per webhook-id, the earliest moment its retry may come
	// after a Retry-After answer; asked counts those answers, and earlyIDs
	// names the webhooks that came back sooner.
	notBefore map[string]time.Time
	asked     int
	earlyIDs  []string
	// received counts, per webhook-id, the requests that reached the
	// proxy, answered or not.
	received map[string]int
}

// startProxy listens on 127.0.0.1 and forwards to targets, full URLs.
func startProxy(targets ...string) (*proxy, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	p := &proxy{
		targets:   targets,
		forwarded: make([]atomic.Int64, len(targets)),
		client:    &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		notBefore: map[string]time.Time{},
		received:  map[string]int{},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, "http://" + ln.Addr().String() + "/webhook/order-paid", nil
}

func (p *proxy) set(m proxyMode) { p.mode.Store(int32(m)) }

func (p *proxy) close() {
	_ = p.srv.Close()
	p.client.CloseIdleConnections()
}

// retryAfterStats returns how many Retry-After answers the proxy gave, and
// which webhooks came back sooner than asked.
func (p *proxy) retryAfterStats() (asked int, early []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked, append([]string(nil), p.earlyIDs...)
}

// arrived notes a webhook's arrival and whether it honours the Retry-After
// it was last given.
func (p *proxy) arrived(id string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.received[id]++
	if nb, ok := p.notBefore[id]; ok {
		delete(p.notBefore, id)
		if at.Before(nb) {
			p.earlyIDs = append(p.earlyIDs, id)
		}
	}
}

// receivedOf returns how many requests for webhook id reached the proxy.
func (p *proxy) receivedOf(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received[id]
}

// askRetryAfter answers w with status and Retry-After d, and remembers
// when the webhook may come back.
func (p *proxy) askRetryAfter(w http.ResponseWriter, id string, status int, d time.Duration) {
	p.mu.Lock()
	p.asked++
	p.notBefore[id] = time.Now().Add(d)
	p.mu.Unlock()
	w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)))
	w.WriteHeader(status)
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(webhook.HeaderID)
	p.arrived(id, time.Now())
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	mode := proxyMode(p.mode.Load())
	switch mode {
	case answer500:
		p.failed.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		return
	case answer503:
		p.failed.Add(1)
		p.askRetryAfter(w, id, http.StatusServiceUnavailable, retryAfter[mode])
		return
	case answer429:
		p.failed.Add(1)
		p.askRetryAfter(w, id, http.StatusTooManyRequests, retryAfter[mode])
		return
	}
	resp, err := p.forward(r, body)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	if mode == forwardAndHang {
		p.failed.Add(1)
		// The dispatcher's HTTP timeout ends the request; the server's
		// Close ends it at the latest.
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}

// forward hands the webhook to the targets in turn, starting with the next
// one, until one answers.
func (p *proxy) forward(r *http.Request, body []byte) (*http.Response, error) {
	first := p.next.Add(1)
	var lastErr error
	for i := range uint64(len(p.targets)) {
		n := (first + i) % uint64(len(p.targets))
		req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.targets[n], bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = r.Header.Clone()
		resp, err := p.client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		p.forwarded[n].Add(1)
		return resp, nil
	}
	return nil, lastErr
}
