package deliver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/webhook"
)

// Shared test helpers, under the names these tests use.
var (
	freeAddr   = testkit.FreeAddr
	eventually = testkit.Eventually
)

// fastSettings are delivery settings that keep the tests quick.
func fastSettings(url string, secrets ...webhook.Secret) deliver.Settings {
	return deliver.Settings{
		URL:         url,
		Secrets:     secrets,
		RetryBase:   50 * time.Millisecond,
		RetryMax:    200 * time.Millisecond,
		MaxDeliver:  10,
		HTTPTimeout: 500 * time.Millisecond,
		Concurrency: 4,
		Replicas:    1,
		Timings: consume.Timings{
			AckWait:        2 * time.Second,
			Heartbeat:      500 * time.Millisecond,
			MessageTimeout: 1500 * time.Millisecond,
			SettleTimeout:  time.Second,
			ShutdownGrace:  2 * time.Second,
		},
	}
}

// mustSecret returns a fresh signing secret.
func mustSecret(tb testing.TB) webhook.Secret {
	tb.Helper()
	raw, err := webhook.GenerateSecret()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := webhook.ParseSecret(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// logBuffer collects JSON log lines; it is safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// attempts returns the log records of delivery attempts for eventID.
func (b *logBuffer) attempts(eventID string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader([]byte(b.String())))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if rec["event_id"] == eventID && rec["outcome"] != nil {
			out = append(out, rec)
		}
	}
	return out
}

// harness is a dispatcher on a fresh embedded NATS server.
type harness struct {
	srv  *natstest.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	d    *deliver.Dispatcher
	logs *logBuffer

	cancel context.CancelFunc
	done   chan error
}

// newHarness starts NATS, provisions the streams and builds a dispatcher;
// start runs it.
func newHarness(t *testing.T, set deliver.Settings) *harness {
	t.Helper()
	srv := natstest.RunServer(t)
	nc, js := natstest.Connect(t, srv.URL())
	h := &harness{srv: srv, nc: nc, js: js, logs: &logBuffer{}}
	logger := slog.New(slog.NewJSONHandler(h.logs, nil))
	h.d = deliver.New(nc, js, set, logger, deliver.NewHTTPClient(set.HTTPTimeout, set.Concurrency),
		deliver.NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.d.Provision(ctx, 0); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs the dispatcher until the test ends (or stop is called).
func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.d.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
}

// stop cancels Run and waits for it to return.
func (h *harness) stop(t *testing.T) time.Duration {
	t.Helper()
	if h.cancel == nil {
		return 0
	}
	start := time.Now()
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of the end of its context")
	}
	return time.Since(start)
}

// publish puts a valid order.paid event into ORDERS and returns it with
// its exact body.
func (h *harness) publish(t *testing.T) (event.OrderPaid, []byte) {
	t.Helper()
	e := testkit.OrderPaid(t)
	body, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h.publishRaw(t, event.Subject(e.Data.OrderID), body, e.ID)
	return e, body
}

func (h *harness) publishRaw(t *testing.T, subject string, body []byte, msgID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := h.js.Publish(ctx, subject, body, opts...); err != nil {
		t.Fatal(err)
	}
}

// consumerIdle reports whether the dispatcher consumer has nothing left:
// no message waiting and none delivered but unsettled.
func (h *harness) consumerIdle(t *testing.T) bool {
	t.Helper()
	info := h.consumerInfo(t)
	return info.NumPending == 0 && info.NumAckPending == 0
}

// consumerInfo returns the dispatcher consumer's state.
func (h *harness) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := h.js.Consumer(ctx, natsx.StreamOrders, natsx.ConsumerDispatcher)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// deadLetters returns the messages in DEADLETTER.
func (h *harness) deadLetters(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stream, err := h.js.Stream(ctx, natsx.StreamDeadletter)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// request is one webhook as the receiver saw it.
type request struct {
	at     time.Time
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint on 127.0.0.1 that records every request
// and answers with respond(n), n counting from 1.
type receiver struct {
	mu       sync.Mutex
	requests []request
	respond  func(n int, w http.ResponseWriter)
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.requests = append(rc.requests, request{at: time.Now(), header: r.Header.Clone(), body: body})
	n := len(rc.requests)
	rc.mu.Unlock()
	rc.respond(n, w)
}

func (rc *receiver) got() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.requests...)
}

// startReceiver serves rc on a random port until the test ends.
func startReceiver(t *testing.T, rc *receiver) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return srv
}

func status(code int) func(int, http.ResponseWriter) {
	return func(_ int, w http.ResponseWriter) { w.WriteHeader(code) }
}
