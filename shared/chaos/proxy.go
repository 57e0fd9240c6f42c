package chaos

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// proxyMode is how the fault proxy answers the dispatcher.
type proxyMode int32

const (
	// passThrough forwards every webhook to the notifier.
	passThrough proxyMode = iota
	// answer500 fails without forwarding, as a receiver with a bug does.
	answer500
	// answer503 fails without forwarding, with Retry-After, as an
	// overloaded receiver does.
	answer503
	// forwardAndHang forwards, so the notifier accepts the event, and then
	// does not answer until the dispatcher gives up: the dispatcher must
	// retry and the notifier must recognise the retry as a duplicate.
	forwardAndHang
)

// proxy stands in front of the notifier's webhook endpoint; the
// dispatcher's NOTIFICATION_WEBHOOK_URL points at it.
type proxy struct {
	target string
	mode   atomic.Int32
	srv    *http.Server
	client *http.Client
	// forwarded counts webhooks handed to the notifier.
	forwarded atomic.Int64
	// failed counts webhooks answered with a fault.
	failed atomic.Int64
}

// startProxy listens on 127.0.0.1 and forwards to target, a full URL.
func startProxy(target string) (*proxy, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	p := &proxy{
		target: target,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
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

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
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
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.target, bytes.NewReader(body))
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := p.client.Do(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	p.forwarded.Add(1)
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
