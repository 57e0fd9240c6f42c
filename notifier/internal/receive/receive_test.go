package receive

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/notifier/internal/processed"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/problem"
	"github.com/jethook/jethook/shared/webhook"
)

// Throwaway secrets used only by these tests.
const (
	testSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	otherSecret = "whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IGtleQ=="
)

func mustSecrets(tb testing.TB, s string) []webhook.Secret {
	tb.Helper()
	secrets, err := webhook.ParseSecrets(s)
	if err != nil {
		tb.Fatal(err)
	}
	return secrets
}

type fixture struct {
	srv    *natstest.Server
	nc     *nats.Conn
	app    *fiber.App
	addr   string
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
}

// newFixture runs NATS with the NOTIFICATIONS stream and the idempotency
// bucket but no consumer, so that every accepted webhook stays countable.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.RunServer(t)
	nc, js := natstest.Connect(t, srv.URL())
	ctx := context.Background()
	err := natsx.Provision(ctx, js,
		[]jetstream.StreamConfig{natsx.NotificationsStream(1)},
		[]jetstream.KeyValueConfig{natsx.ProcessedBucket(1, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, natsx.BucketProcessed)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &Handler{
		Verifier: webhook.Verifier{Secrets: mustSecrets(t, testSecret)},
		Conn:     nc,
		JS:       js,
		Store:    processed.New(js),
		Logger:   logger,
		Timeout:  time.Second,
		// The test events are minutes old at most.
		MaxEventAge: time.Hour,
	}
	app := NewApp(h, logger, func(context.Context) error { return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	return &fixture{srv: srv, nc: nc, app: app, addr: ln.Addr().String(), js: js, stream: stream, kv: kv}
}

func (f *fixture) count(t *testing.T) uint64 {
	t.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) do(t *testing.T, req *http.Request) response {
	t.Helper()
	if req.ContentLength > MaxBodyBytes {
		return f.doOversized(t, req)
	}
	resp, err := f.app.Test(req, 5000)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// doOversized sends only the head of req to the real listener: the server
// must refuse the body by its announced length alone. Sending the body too
// would race the server's close against our write.
func (f *fixture) doOversized(t *testing.T, req *http.Request) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", req.Method, req.URL.Path, f.addr, req.ContentLength)
	if err := req.Header.Write(&head); err != nil {
		t.Fatal(err)
	}
	head.WriteString("\r\n")
	if _, err := conn.Write(head.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// newEvent returns a valid order.paid event body and its id.
func newEvent(t *testing.T) (string, []byte) {
	t.Helper()
	ev := testkit.OrderPaid(t)
	body, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return ev.ID, body
}

// signed is a webhook request signed as the dispatcher would sign it.
func signed(t *testing.T, secret, id string, ts time.Time, body []byte) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	webhook.SetHeaders(req.Header, mustSecrets(t, secret), id, ts, body)
	return req
}

func TestHandler(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		// request builds the request from a fresh valid event.
		request    func(t *testing.T, id string, body []byte) *http.Request
		wantStatus int
		wantBody   string   // for 200: the status field
		wantDetail string   // for a refusal, when set: the problem's detail
		wantFields []string // for 422: the field names in errors
		published  bool
	}{
		{
			name: "valid",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				return signed(t, testSecret, id, time.Now(), body)
			},
			wantStatus: 200, wantBody: "event_received", published: true,
		},
		{
			name: "valid with charset and a rotated secret list",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, otherSecret+","+testSecret, id, time.Now(), body)
				req.Header.Set("Content-Type", "application/json; charset=utf-8")
				return req
			},
			wantStatus: 200, wantBody: "event_received", published: true,
		},
		{
			name: "no signature",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Del(webhook.HeaderSignature)
				return req
			},
			wantStatus: 403, wantDetail: "signature verification failed: webhook: missing header: webhook-signature",
		},
		{
			name: "wrong secret",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				return signed(t, otherSecret, id, time.Now(), body)
			},
			wantStatus: 403, wantDetail: "signature verification failed: webhook: no matching signature",
		},
		{
			name: "tampered body",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				tampered := bytes.Replace(body, []byte(`"quantity":2`), []byte(`"quantity":3`), 1)
				req.Body = io.NopCloser(bytes.NewReader(tampered))
				return req
			},
			wantStatus: 403,
		},
		{
			name: "stale timestamp",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				return signed(t, testSecret, id, time.Now().Add(-6*time.Minute), body)
			},
			wantStatus: 403,
		},
		{
			name: "future timestamp",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				return signed(t, testSecret, id, time.Now().Add(6*time.Minute), body)
			},
			wantStatus: 403,
		},
		{
			name: "missing webhook-id",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Del(webhook.HeaderID)
				return req
			},
			wantStatus: 403,
		},
		{
			name: "missing webhook-timestamp",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Del(webhook.HeaderTimestamp)
				return req
			},
			wantStatus: 403,
		},
		{
			name: "body over 1 MiB",
			request: func(t *testing.T, id string, _ []byte) *http.Request {
				big := []byte(`{"id":"` + id + `","pad":"` + strings.Repeat("x", MaxBodyBytes) + `"}`)
				return signed(t, testSecret, id, time.Now(), big)
			},
			wantStatus: 413,
		},
		{
			name: "malformed JSON",
			request: func(t *testing.T, id string, _ []byte) *http.Request {
				return signed(t, testSecret, id, time.Now(), []byte(`{"id":"`+id+`",`))
			},
			wantStatus: 400,
		},
		{
			name: "contract violation",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				bad := bytes.Replace(body, []byte(`"quantity":2`), []byte(`"quantity":0`), 1)
				bad = bytes.Replace(bad, []byte(`"ada@example.com"`), []byte(`"not an address"`), 1)
				return signed(t, testSecret, id, time.Now(), bad)
			},
			wantStatus: 422, wantFields: []string{"data.quantity", "data.customer_email"},
		},
		{
			name: "body id differs from webhook-id",
			request: func(t *testing.T, _ string, body []byte) *http.Request {
				other, _ := newEvent(t)
				return signed(t, testSecret, other, time.Now(), body)
			},
			wantStatus: 422, wantFields: []string{"id"},
		},
		{
			name: "wrong content type",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set("Content-Type", "text/plain")
				return req
			},
			wantStatus: 415, wantDetail: "Content-Type must be application/json",
		},
		{
			name: "compressed body",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set("Content-Encoding", "gzip")
				return req
			},
			wantStatus: 415, wantDetail: "Content-Encoding gzip is not supported",
		},
		{
			name: "GET",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Method = http.MethodGet
				return req
			},
			wantStatus: 405,
		},
		{
			name: "signature header with extra whitespace",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set(webhook.HeaderSignature, "  v1,bogus=   "+req.Header.Get(webhook.HeaderSignature)+"  ")
				return req
			},
			wantStatus: 200, wantBody: "event_received", published: true,
		},
		{
			name: "several signatures, one valid",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				other := webhook.Sign(mustSecrets(t, otherSecret), id, time.Now(), body)
				req.Header.Set(webhook.HeaderSignature, other+" v2,abc "+req.Header.Get(webhook.HeaderSignature))
				return req
			},
			wantStatus: 200, wantBody: "event_received", published: true,
		},
		{
			name: "several signatures, none valid",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, otherSecret, id, time.Now(), body)
				req.Header.Set(webhook.HeaderSignature, req.Header.Get(webhook.HeaderSignature)+" v1,AAAA v1,")
				return req
			},
			wantStatus: 403,
		},
		{
			name: "only an unknown signature version",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set(webhook.HeaderSignature, strings.Replace(req.Header.Get(webhook.HeaderSignature), "v1,", "v1a,", 1))
				return req
			},
			wantStatus: 403,
		},
		{
			name: "webhook-id header twice",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Add(webhook.HeaderID, "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60")
				return req
			},
			wantStatus: 403, wantDetail: "signature verification failed: webhook-id header sent more than once",
		},
		{
			name: "webhook-signature header twice",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Add(webhook.HeaderSignature, "v1,AAAA")
				return req
			},
			wantStatus: 403,
		},
		{
			name: "oversized webhook-id",
			request: func(t *testing.T, _ string, body []byte) *http.Request {
				return signed(t, testSecret, "evt_"+strings.Repeat("a", 300), time.Now(), body)
			},
			wantStatus: 403, wantDetail: "signature verification failed: webhook: invalid header: webhook-id is 304 bytes, limit is 256",
		},
		{
			name: "oversized signature header of junk",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set(webhook.HeaderSignature, strings.TrimSpace(strings.Repeat(" v1,AAAA", 400)))
				return req
			},
			wantStatus: 403,
		},
		{
			name: "timestamp in the year 3000",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				return signed(t, testSecret, id, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), body)
			},
			wantStatus: 403,
		},
		{
			name: "timestamp not a number",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set(webhook.HeaderTimestamp, "yesterday")
				return req
			},
			wantStatus: 403, wantDetail: "signature verification failed: webhook: invalid header: webhook-timestamp is not an integer",
		},
		{
			name: "timestamp overflows int64",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Set(webhook.HeaderTimestamp, "99999999999999999999999")
				return req
			},
			wantStatus: 403,
		},
		{
			name: "webhook-id with dots, correctly signed",
			request: func(t *testing.T, _ string, body []byte) *http.Request {
				return signed(t, testSecret, "evt.a.b", time.Now(), body)
			},
			wantStatus: 422, wantFields: []string{"id"},
		},
		{
			name: "empty body",
			request: func(t *testing.T, id string, _ []byte) *http.Request {
				return signed(t, testSecret, id, time.Now(), []byte{})
			},
			wantStatus: 400,
		},
		{
			name: "null body",
			request: func(t *testing.T, id string, _ []byte) *http.Request {
				return signed(t, testSecret, id, time.Now(), []byte("null"))
			},
			wantStatus: 422,
		},
		{
			name: "trailing garbage",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				return signed(t, testSecret, id, time.Now(), append(bytes.Clone(body), "garbage"...))
			},
			wantStatus: 400,
		},
		{
			name: "duplicate JSON key",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				dup := bytes.Replace(body, []byte(`"quantity":2`), []byte(`"quantity":2,"quantity":9999`), 1)
				return signed(t, testSecret, id, time.Now(), dup)
			},
			wantStatus: 400,
		},
		{
			name: "invalid UTF-8",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				bad := bytes.Replace(body, []byte("Book"), []byte("Bo\xffk"), 1)
				return signed(t, testSecret, id, time.Now(), bad)
			},
			wantStatus: 400,
		},
		{
			name: "quantity as a string",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				bad := bytes.Replace(body, []byte(`"quantity":2`), []byte(`"quantity":"2"`), 1)
				return signed(t, testSecret, id, time.Now(), bad)
			},
			wantStatus: 422, wantFields: []string{"data.quantity"},
		},
		{
			name: "amount overflows int64",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				bad := bytes.Replace(body, []byte(`"amount_minor":2100`), []byte(`"amount_minor":1e30`), 1)
				return signed(t, testSecret, id, time.Now(), bad)
			},
			wantStatus: 422, wantFields: []string{"data.amount_minor"},
		},
		{
			name: "control character in product name",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				bad := bytes.Replace(body, []byte(`"Book"`), []byte(`"Book\r\nBcc: x@y.z"`), 1)
				return signed(t, testSecret, id, time.Now(), bad)
			},
			wantStatus: 422, wantFields: []string{"data.product_name"},
		},
		{
			name: "unknown event type",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				bad := bytes.Replace(body, []byte(`"order.paid"`), []byte(`"order.refunded"`), 1)
				return signed(t, testSecret, id, time.Now(), bad)
			},
			wantStatus: 422, wantFields: []string{"type"},
		},
		{
			name: "10 MiB body",
			request: func(t *testing.T, id string, _ []byte) *http.Request {
				big := []byte(`{"id":"` + id + `","pad":"` + strings.Repeat("x", 10<<20) + `"}`)
				return signed(t, testSecret, id, time.Now(), big)
			},
			wantStatus: 413,
		},
		{
			name: "no content type",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				req := signed(t, testSecret, id, time.Now(), body)
				req.Header.Del("Content-Type")
				return req
			},
			wantStatus: 415,
		},
		{
			name: "event older than PROCESSED_TTL",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				old := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
				var ev map[string]any
				_ = json.Unmarshal(body, &ev)
				ev["timestamp"] = old
				stale, _ := json.Marshal(ev)
				return signed(t, testSecret, id, time.Now(), stale)
			},
			wantStatus: 422, wantFields: []string{"timestamp"},
		},
		{
			name: "already processed",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				if _, err := f.kv.Put(context.Background(), id, []byte(processed.Done)); err != nil {
					t.Fatal(err)
				}
				return signed(t, testSecret, id, time.Now(), body)
			},
			wantStatus: 200, wantBody: "duplicate",
		},
		{
			name: "claimed by the worker",
			request: func(t *testing.T, id string, body []byte) *http.Request {
				if _, err := f.kv.Put(context.Background(), id, []byte(processed.Claimed)); err != nil {
					t.Fatal(err)
				}
				return signed(t, testSecret, id, time.Now(), body)
			},
			wantStatus: 200, wantBody: "duplicate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, body := newEvent(t)
			req := tt.request(t, id, body)
			before := f.count(t)
			resp := f.do(t, req)
			if resp.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.wantStatus, resp.body)
			}
			after := f.count(t)
			if tt.published {
				if after != before+1 {
					t.Fatalf("NOTIFICATIONS has %d messages, want %d", after, before+1)
				}
				checkPublished(t, f, id, body)
			} else if after != before {
				t.Fatalf("NOTIFICATIONS went from %d to %d messages, want no change", before, after)
			}
			if tt.wantStatus == 200 {
				var got struct{ Status string }
				if err := json.Unmarshal(resp.body, &got); err != nil || got.Status != tt.wantBody {
					t.Fatalf("body %s, want status %q", resp.body, tt.wantBody)
				}
				return
			}
			if ct := resp.header.Get("Content-Type"); ct != problem.ContentType {
				t.Errorf("Content-Type = %q, want %s", ct, problem.ContentType)
			}
			var p problem.Problem
			if err := json.Unmarshal(resp.body, &p); err != nil || p.Status != tt.wantStatus {
				t.Fatalf("problem body %s (%v)", resp.body, err)
			}
			if tt.wantDetail != "" && p.Detail != tt.wantDetail {
				t.Errorf("detail = %q, want %q", p.Detail, tt.wantDetail)
			}
			for _, field := range tt.wantFields {
				if _, ok := p.Errors[field]; !ok {
					t.Errorf("errors %v lacks %s", p.Errors, field)
				}
			}
		})
	}
}

// checkPublished asserts that the last notification is the webhook body,
// byte for byte, deduplicated by the webhook id.
func checkPublished(t *testing.T, f *fixture, id string, body []byte) {
	t.Helper()
	msg, err := f.stream.GetLastMsgForSubject(context.Background(), Subject)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(jetstream.MsgIDHeader); got != id {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, id)
	}
	if !bytes.Equal(msg.Data, body) {
		t.Errorf("published %s, want %s", msg.Data, body)
	}
}

func TestHandlerSameWebhookTwice(t *testing.T) {
	f := newFixture(t)
	id, body := newEvent(t)
	for i, want := range []string{"event_received", "duplicate"} {
		resp := f.do(t, signed(t, testSecret, id, time.Now(), body))
		var got struct{ Status string }
		if resp.status != 200 || json.Unmarshal(resp.body, &got) != nil || got.Status != want {
			t.Fatalf("post %d: %d %s, want 200 %s", i+1, resp.status, resp.body, want)
		}
	}
	if n := f.count(t); n != 1 {
		t.Fatalf("NOTIFICATIONS has %d messages, want 1", n)
	}
}

func TestHandlerNATSDown(t *testing.T) {
	f := newFixture(t)
	f.srv.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for f.nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("client still connected after the server stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	id, body := newEvent(t)
	start := time.Now()
	resp := f.do(t, signed(t, testSecret, id, time.Now(), body))
	if resp.status != 503 || resp.header.Get("Content-Type") != problem.ContentType {
		t.Fatalf("got %d %s, want 503 problem+json", resp.status, resp.body)
	}
	if resp.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("503 took %s, want it at once", elapsed)
	}
}

func TestHandlerStreamMissing(t *testing.T) {
	f := newFixture(t)
	if err := f.js.DeleteStream(context.Background(), natsx.StreamNotifications); err != nil {
		t.Fatal(err)
	}
	id, body := newEvent(t)
	resp := f.do(t, signed(t, testSecret, id, time.Now(), body))
	if resp.status != 503 {
		t.Fatalf("got %d %s, want 503", resp.status, resp.body)
	}
	if _, err := f.kv.Get(context.Background(), id); err == nil {
		t.Error("a refused webhook left a record in the idempotency store")
	}
}
