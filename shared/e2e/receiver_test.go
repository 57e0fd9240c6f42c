package e2e

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

// receiver is a subscriber's webhook endpoint on 127.0.0.1, as a user
// would write it with shared/webhook: it verifies every request against
// the secrets it trusts and answers a verified webhook with the status it
// is told to. It records every request, verified or not.
type receiver struct {
	t      *testing.T
	addr   string
	status atomic.Int32
	// delay is how long it takes to answer a verified webhook.
	delay atomic.Int64

	mu      sync.Mutex
	secrets []webhook.Secret
	got     []delivery
	srv     *http.Server
}

// delivery is one request a receiver got.
type delivery struct {
	id        string // webhook-id
	header    http.Header
	body      []byte
	at        time.Time
	verified  bool // signed with a secret the receiver trusted then
	answered  int  // the status the receiver answered
	refusedBy string
}

// newReceiver starts a receiver answering 200.
func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, addr: freeAddr(t)}
	r.status.Store(http.StatusOK)
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hooks/jethook" }

// trust sets the secrets the receiver verifies with: one whsec_ secret or
// several, comma-separated.
func (r *receiver) trust(secrets string) {
	r.t.Helper()
	s, err := webhook.ParseSecrets(secrets)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = s
}

// answer sets the status of the answer to a verified webhook.
func (r *receiver) answer(status int) { r.status.Store(int32(status)) }

// answerAfter makes the receiver take d to answer a verified webhook, as
// an overloaded endpoint does.
func (r *receiver) answerAfter(d time.Duration) { r.delay.Store(int64(d)) }

// up starts listening; down stops it, so that the dispatcher's
// connections are refused.
func (r *receiver) up() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (r *receiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	v := webhook.Verifier{Secrets: r.secrets}
	r.mu.Unlock()
	d := delivery{id: req.Header.Get(webhook.HeaderID), header: req.Header.Clone(), at: time.Now()}
	msg, err := v.Receive(req.Header, req.ContentLength, req.Body)
	var refusal *webhook.Refusal
	if errors.As(err, &refusal) {
		d.answered, d.refusedBy = refusal.Status, refusal.Detail
		r.record(d)
		refusal.ServeHTTP(w, req)
		return
	}
	d.body, d.verified, d.answered = msg.Body, true, int(r.status.Load())
	r.record(d)
	if delay := time.Duration(r.delay.Load()); delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	w.WriteHeader(d.answered)
}

func (r *receiver) record(d delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
}

// deliveries returns every request so far, in order.
func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// of returns the requests for one event, in order.
func (r *receiver) of(eventID string) []delivery {
	var out []delivery
	for _, d := range r.deliveries() {
		if d.id == eventID {
			out = append(out, d)
		}
	}
	return out
}

// accepted returns the verified webhooks answered 2xx, by webhook-id.
func (r *receiver) accepted() map[string]int {
	out := map[string]int{}
	for _, d := range r.deliveries() {
		if d.verified && d.answered/100 == 2 {
			out[d.id]++
		}
	}
	return out
}

// verifiesWith reports whether d was signed with secret: one of the
// signatures it carries is secret's.
func (d delivery) verifiesWith(t *testing.T, secret string) bool {
	t.Helper()
	s, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	return webhook.Verifier{Secrets: []webhook.Secret{s}}.Verify(
		d.header.Get(webhook.HeaderID), d.header.Get(webhook.HeaderTimestamp), d.header.Get(webhook.HeaderSignature), d.body) == nil
}
