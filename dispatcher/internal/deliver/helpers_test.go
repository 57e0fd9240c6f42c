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
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jethook/jethook/dispatcher/internal/deliver"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
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

// setup is what a test runs: the fleet's settings and the one
// subscription it delivers to, sub_notifier, as the dispatcher ensures it.
type setup struct {
	deliver.Settings
	URL         string
	Secrets     []webhook.Secret
	Concurrency int // the subscription's max_in_flight
}

// fastSettings are delivery settings that keep the tests quick.
func fastSettings(url string, secrets ...webhook.Secret) *setup {
	return &setup{
		Settings: deliver.Settings{
			RetryBase:            50 * time.Millisecond,
			RetryMax:             200 * time.Millisecond,
			MaxDeliver:           10,
			HTTPTimeout:          500 * time.Millisecond,
			Replicas:             1,
			RedeliverConcurrency: 4,
			Breaker:              deliver.BreakerSettings{Failures: 1000, Cooloff: time.Second, CooloffMax: 4 * time.Second, DisableAfter: time.Hour},
			Timings: consume.Timings{
				AckWait:        2 * time.Second,
				Heartbeat:      500 * time.Millisecond,
				MessageTimeout: 1500 * time.Millisecond,
				SettleTimeout:  time.Second,
				ShutdownGrace:  2 * time.Second,
			},
		},
		URL:         url,
		Secrets:     secrets,
		Concurrency: 4,
	}
}

// testKey seals the registry's secrets in these tests.
var testKey = [32]byte{'d', 'e', 'l', 'i', 'v', 'e', 'r'}

// mustSecret returns a fresh signing secret.
func mustSecret(tb testing.TB) webhook.Secret {
	tb.Helper()
	s, _ := mustSecretText(tb)
	return s
}

// mustSecretText returns a fresh signing secret and its text.
func mustSecretText(tb testing.TB) (webhook.Secret, string) {
	tb.Helper()
	raw, err := webhook.GenerateSecret()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := webhook.ParseSecret(raw)
	if err != nil {
		tb.Fatal(err)
	}
	texts.Lock()
	texts.m = append(texts.m, secretText{s, raw})
	texts.Unlock()
	return s, raw
}

type secretText struct {
	s    webhook.Secret
	text string
}

// texts remembers every secret mustSecret made, to find a secret's text.
var texts struct {
	sync.Mutex
	m []secretText
}

// textOf returns the text of a secret mustSecret made.
func textOf(tb testing.TB, s webhook.Secret) string {
	tb.Helper()
	texts.Lock()
	defer texts.Unlock()
	for _, st := range texts.m {
		if reflect.DeepEqual(st.s, s) {
			return st.text
		}
	}
	tb.Fatal("a secret not made by mustSecret")
	return ""
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

// harness is a fleet on a fresh embedded NATS server, delivering to one
// subscription, sub_notifier.
type harness struct {
	srv   *natstest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	reg   *registry.Registry
	fleet *deliver.Fleet
	logs  *logBuffer
	subID string

	cancel context.CancelFunc
	done   chan error
}

// newHarness starts NATS, provisions the streams and the registry with the
// subscription, and builds a fleet; start runs it.
func newHarness(t *testing.T, set *setup) *harness {
	t.Helper()
	srv := natstest.RunServer(t)
	nc, js := natstest.Connect(t, srv.URL())
	h := &harness{srv: srv, nc: nc, js: js, logs: &logBuffer{}, subID: subscription.NotifierID}
	logger := slog.New(slog.NewJSONHandler(h.logs, nil))
	reg, err := registry.New(js, testKey, 1, logger, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.reg = reg
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	var secrets []string
	for _, s := range set.Secrets {
		secrets = append(secrets, textOf(t, s))
	}
	if _, _, err := reg.Ensure(ctx, registry.Notifier(set.URL, secrets, set.Concurrency)); err != nil {
		t.Fatal(err)
	}
	guard := ssrf.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	h.fleet = deliver.New(nc, js, reg, set.Settings, logger, guard.Client(set.HTTPTimeout, 16),
		deliver.NewMetrics(prometheus.NewRegistry()))
	if err := h.fleet.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs the fleet until the test ends (or stop is called), and
// waits until the subscription's consumer exists.
func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.fleet.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	eventually(t, 10*time.Second, "the subscription's consumer", func() bool {
		_, err := h.js.Consumer(context.Background(), natsx.StreamOrders, natsx.SubscriptionConsumer(h.subID))
		return err == nil
	})
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

// consumerIdle reports whether the subscription's consumer has nothing left:
// no message waiting and none delivered but unsettled.
func (h *harness) consumerIdle(t *testing.T) bool {
	t.Helper()
	info := h.consumerInfo(t)
	return info.NumPending == 0 && info.NumAckPending == 0
}

// consumerInfo returns the subscription's consumer's state.
func (h *harness) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := h.js.Consumer(ctx, natsx.StreamOrders, natsx.SubscriptionConsumer(h.subID))
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

// logsUntil waits until eventID's log records include one with outcome,
// and returns them. The runtime writes a message's line after it settled
// it, so an idle consumer does not yet mean a complete log.
func (h *harness) logsUntil(t *testing.T, eventID, outcome string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	eventually(t, 5*time.Second, "the "+outcome+" log line of "+eventID, func() bool {
		recs = h.logs.attempts(eventID)
		for _, r := range recs {
			if r["outcome"] == outcome {
				return true
			}
		}
		return false
	})
	return recs
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
