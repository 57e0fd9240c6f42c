package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

// Shared test helpers, under the names these tests use.
var (
	freeAddr   = testkit.FreeAddr
	eventually = testkit.Eventually
)

type instance struct {
	base string
	done chan error
	stop context.CancelFunc
}

// startOrders runs the service as main does, on a free port, and stops it
// when the test ends.
func startOrders(t testing.TB, natsURL string, waitReady bool, extra ...string) *instance {
	t.Helper()
	return startOrdersLogging(t, natsURL, waitReady, io.Discard, extra...)
}

// startOrdersLogging is startOrders with the service's log going to stdout.
func startOrdersLogging(t testing.TB, natsURL string, waitReady bool, stdout io.Writer, extra ...string) *instance {
	t.Helper()
	addr := freeAddr(t)
	env := map[string]string{"NATS_URL": natsURL, "ORDERS_ADDR": addr, "LOG_FORMAT": "text", "PUBLISH_TIMEOUT": "2s"}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &instance{base: "http://" + addr, done: make(chan error, 1), stop: cancel}
	go func() { s.done <- run(ctx, nil, func(k string) string { return env[k] }, stdout, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			t.Error("orders did not stop within 15 s")
		}
	})
	path := "/healthz"
	if waitReady {
		path = "/readyz"
	}
	eventually(t, 15*time.Second, path, func() bool {
		resp, err := http.Get(s.base + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

type response struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
}

func post(t *testing.T, url, contentType, key string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b, time.Since(start)}
}

// postHuge sends a body far over the limit the way a streaming client does:
// it reads the answer while still writing, because the server answers 413
// and closes without reading the rest.
func postHuge(t *testing.T, base, contentType string, body []byte) response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		fmt.Fprintf(conn, "POST /orders HTTP/1.1\r\nHost: test\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", contentType, len(body))
		_, _ = conn.Write(body)
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to a %d-byte body: %v", len(body), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

const validOrder = `{"product_name":"Book","quantity":2,"price_per_item":10.50,"customer_email":"ada@example.com"}`

type orderView struct {
	OrderID       string `json:"order_id"`
	Status        string `json:"status"`
	EventID       string `json:"event_id"`
	CustomerEmail string `json:"customer_email"`
	ProductName   string `json:"product_name"`
	Quantity      int64  `json:"quantity"`
	AmountMinor   int64  `json:"amount_minor"`
	Currency      string `json:"currency"`
	CreatedAt     string `json:"created_at"`
}

func decodeOrder(t *testing.T, b []byte) orderView {
	t.Helper()
	var o orderView
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return o
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), natsx.StreamOrders)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestCreateAndGet(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	_, js := natstest.Connect(t, ns.URL())

	r := post(t, s.base+"/orders", "application/json", "", []byte(validOrder))
	if r.status != http.StatusCreated {
		t.Fatalf("POST /orders = %d %s", r.status, r.body)
	}
	o := decodeOrder(t, r.body)
	if o.Status != "paid" || o.AmountMinor != 2100 || o.Currency != "USD" || o.Quantity != 2 ||
		o.CustomerEmail != "ada@example.com" || !event.ValidOrderID(o.OrderID) || !event.ValidEventID(o.EventID) || o.CreatedAt == "" {
		t.Fatalf("created order = %+v", o)
	}
	if loc := r.header.Get("Location"); loc != "/orders/"+o.OrderID {
		t.Fatalf("Location = %q", loc)
	}

	// The 201 promises the event is in ORDERS, with the event id as Nats-Msg-Id.
	st, _ := js.Stream(context.Background(), natsx.StreamOrders)
	msg, err := st.GetLastMsgForSubject(context.Background(), event.Subject(o.OrderID))
	if err != nil {
		t.Fatalf("no event on %s: %v", event.Subject(o.OrderID), err)
	}
	if msg.Header.Get("Nats-Msg-Id") != o.EventID {
		t.Fatalf("Nats-Msg-Id = %q, want %q", msg.Header.Get("Nats-Msg-Id"), o.EventID)
	}
	e, err := event.Decode(msg.Data)
	if err != nil {
		t.Fatalf("stored event does not meet the contract: %v", err)
	}
	if e.ID != o.EventID || e.Data.OrderID != o.OrderID || e.Data.AmountMinor != 2100 {
		t.Fatalf("event = %+v", e)
	}

	resp, err := http.Get(s.base + "/orders/" + o.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || decodeOrder(t, b) != o {
		t.Fatalf("GET = %d %s, want %+v", resp.StatusCode, b, o)
	}
}

func TestPriceAsStringAndOtherCurrency(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	r := post(t, s.base+"/orders", "application/json", "", []byte(`{"product_name":"Tea","quantity":3,"price_per_item":"0.29","customer_email":"bo@example.org","currency":"EUR"}`))
	if r.status != 201 {
		t.Fatalf("POST = %d %s", r.status, r.body)
	}
	if o := decodeOrder(t, r.body); o.AmountMinor != 87 || o.Currency != "EUR" {
		t.Fatalf("order = %+v, want 87 EUR minor units", o)
	}
}

func TestIdempotencyKey(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	_, js := natstest.Connect(t, ns.URL())

	first := post(t, s.base+"/orders", "application/json", "key-1", []byte(validOrder))
	second := post(t, s.base+"/orders", "application/json", "key-1", []byte(validOrder))
	if first.status != 201 || second.status != 201 {
		t.Fatalf("statuses = %d, %d", first.status, second.status)
	}
	if decodeOrder(t, first.body) != decodeOrder(t, second.body) {
		t.Fatalf("replay returned another order:\n%s\n%s", first.body, second.body)
	}
	if second.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("replay not marked Idempotent-Replayed")
	}
	other := post(t, s.base+"/orders", "application/json", "key-1", []byte(strings.Replace(validOrder, `"quantity":2`, `"quantity":3`, 1)))
	if other.status != http.StatusConflict || other.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("same key, other body = %d %s", other.status, other.body)
	}
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("ORDERS holds %d events, want 1", n)
	}
}

// TestBadInput asserts each bad request gets its status as problem+json and
// leaves no trace: no event, no order, no idempotency key.
func TestBadInput(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	_, js := natstest.Connect(t, ns.URL())

	long := strings.Repeat("x", 201)
	tests := []struct {
		name        string
		contentType string
		key         string
		body        string
		status      int
		field       string
	}{
		{"malformed json", "application/json", "", `{"product_name":`, 400, ""},
		{"not an object", "application/json", "", `[1,2]`, 400, ""},
		{"null", "application/json", "", `null`, 400, ""},
		{"trailing garbage", "application/json", "", validOrder + `}`, 400, ""},
		{"empty body", "application/json", "", ``, 400, ""},
		{"wrong content type", "text/plain", "", validOrder, 415, ""},
		{"no content type", "", "", validOrder, 415, ""},
		{"empty name", "application/json", "", `{"product_name":"","quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "product_name"},
		{"long name", "application/json", "", `{"product_name":"` + long + `","quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "product_name"},
		{"zero quantity", "application/json", "", `{"product_name":"x","quantity":0,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"huge quantity", "application/json", "", `{"product_name":"x","quantity":10001,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"fractional quantity", "application/json", "", `{"product_name":"x","quantity":1.5,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"quantity as string", "application/json", "", `{"product_name":"x","quantity":"1","price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"zero price", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":0,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"negative price", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":-5,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"three decimals", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1.005,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"price overflow", "application/json", "", `{"product_name":"x","quantity":10000,"price_per_item":1e300,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"price as bool", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":true,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"bad email", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"not-an-email"}`, 422, "customer_email"},
		{"email with header injection", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"a@b.co\r\nBcc: x@y.z"}`, 422, "customer_email"},
		{"unknown currency", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"a@b.co","currency":"ABC"}`, 422, "currency"},
		{"unknown field", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"a@b.co","qty":2}`, 422, "qty"},
		{"missing everything", "application/json", "", `{}`, 422, "product_name"},
		{"oversized idempotency key", "application/json", strings.Repeat("k", 300), validOrder, 422, "Idempotency-Key"},
		{"body over 64 KiB", "application/json", "", `{"product_name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, ""},
		{"10 MiB body", "application/json", "", `{"product_name":"` + strings.Repeat("x", 10<<20) + `"}`, 413, ""},
		{"truncated json", "application/json", "", validOrder[:len(validOrder)-10], 400, ""},
		{"single quotes", "application/json", "", `{'product_name':'x'}`, 400, ""},
		{"duplicate key", "application/json", "", strings.Replace(validOrder, `"quantity":2`, `"quantity":2,"quantity":2000`, 1), 400, ""},
		{"two json values", "application/json", "", validOrder + validOrder, 400, ""},
		{"invalid utf-8", "application/json", "", "{\"product_name\":\"\xff\xfe\",\"quantity\":1,\"price_per_item\":1,\"customer_email\":\"a@b.co\"}", 400, ""},
		{"form content type", "application/x-www-form-urlencoded", "", `product_name=x`, 415, ""},
		{"negative quantity", "application/json", "", `{"product_name":"x","quantity":-3,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"quantity overflows int64", "application/json", "", `{"product_name":"x","quantity":99999999999999999999999,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"quantity in exponent notation", "application/json", "", `{"product_name":"x","quantity":1e3,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "quantity"},
		{"price in exponent notation", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1.5e1,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"price string with exponent", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":"1e2","customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"price string with spaces", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":" 1.00 ","customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"price with thousands separator", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":"1,000.00","customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"price too large", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":99999999999999999999,"customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"amount overflows", "application/json", "", `{"product_name":"x","quantity":10000,"price_per_item":"90000000000000.00","customer_email":"a@b.co"}`, 422, "price_per_item"},
		{"control character in name", "application/json", "", `{"product_name":"Bo\u0000ok","quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "product_name"},
		{"newline in name", "application/json", "", `{"product_name":"Book\nBcc: x","quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "product_name"},
		{"name as object", "application/json", "", `{"product_name":{"x":1},"quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "product_name"},
		{"null name", "application/json", "", `{"product_name":null,"quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, 422, "product_name"},
		{"unicode email", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"ädä@example.com"}`, 422, "customer_email"},
		{"display-name email", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"Ada <a@b.co>"}`, 422, "customer_email"},
		{"lower-case currency", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"a@b.co","currency":"usd"}`, 422, "currency"},
		{"currency as number", "application/json", "", `{"product_name":"x","quantity":1,"price_per_item":1,"customer_email":"a@b.co","currency":840}`, 422, "currency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			// A body over the limit is refused before it is read, and the
			// connection closed: a client still writing it may see the reset
			// before the answer, so such bodies are sent by hand.
			if len(tt.body) > 64<<10 {
				r = postHuge(t, s.base, tt.contentType, []byte(tt.body))
			} else {
				r = post(t, s.base+"/orders", tt.contentType, tt.key, []byte(tt.body))
			}
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (%s)", r.status, tt.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type = %q, body %s", ct, r.body)
			}
			var p struct {
				Status int               `json:"status"`
				Title  string            `json:"title"`
				Errors map[string]string `json:"errors"`
			}
			if err := json.Unmarshal(r.body, &p); err != nil || p.Status != tt.status || p.Title == "" {
				t.Fatalf("problem body = %s (%v)", r.body, err)
			}
			if tt.field != "" && p.Errors[tt.field] == "" {
				t.Fatalf("errors = %v, want a message for %q", p.Errors, tt.field)
			}
		})
	}
	if n := streamMsgs(t, js); n != 0 {
		t.Fatalf("bad requests left %d events in ORDERS", n)
	}
	for _, bucket := range []string{natsx.BucketOrders, natsx.BucketOrdersIdempotency} {
		kv, err := js.KeyValue(context.Background(), bucket)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Values() != 0 {
			t.Fatalf("bad requests left %d values in %s", st.Values(), bucket)
		}
	}
}

// TestCompressedBodyRefused: a gzip body is refused before anything inflates
// it, since 10 KiB on the wire can hold gigabytes.
func TestCompressedBodyRefused(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	_, js := natstest.Connect(t, ns.URL())
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	fmt.Fprintf(zw, `{"product_name":"%s","quantity":1,"price_per_item":1,"customer_email":"a@b.co"}`, strings.Repeat("x", 20<<20))
	zw.Close()
	for _, enc := range []string{"gzip", "gzip, gzip", "deflate", "br"} {
		req, _ := http.NewRequest(http.MethodPost, s.base+"/orders", bytes.NewReader(bomb.Bytes()))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", enc)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("Content-Encoding %s: %d %s, want 415 problem+json", enc, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if n := streamMsgs(t, js); n != 0 {
		t.Fatalf("ORDERS holds %d events", n)
	}
}

// TestBadOrderLookups: every malformed or unknown id, and every method the
// resource does not have, is a problem+json answer without side effects.
func TestBadOrderLookups(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	_, js := natstest.Connect(t, ns.URL())
	known := decodeOrder(t, post(t, s.base+"/orders", "application/json", "", []byte(validOrder)).body).OrderID

	tests := []struct {
		name, method, path string
		status             int
	}{
		{"not a uuid", "GET", "/orders/nope", 404},
		{"unknown uuid", "GET", "/orders/0193a5b2-7c1d-7aaa-8bbb-0123456789ab", 404},
		{"upper-case uuid", "GET", "/orders/" + strings.ToUpper(known), 404},
		{"uuid without dashes", "GET", "/orders/" + strings.ReplaceAll(known, "-", ""), 404},
		{"uuid in braces", "GET", "/orders/%7B" + known + "%7D", 404},
		{"urn uuid", "GET", "/orders/urn:uuid:" + known, 404},
		{"uuid with trailing newline", "GET", "/orders/" + known + "%0A", 404},
		{"uuid with trailing space", "GET", "/orders/" + known + "%20", 404},
		{"uuid with a NUL", "GET", "/orders/" + known + "%00", 404},
		{"dots instead of dashes", "GET", "/orders/0193a5b2.7c1d.7aaa.8bbb.0123456789ab", 404},
		{"NATS wildcard", "GET", "/orders/orders.paid.>", 404},
		{"NATS star", "GET", "/orders/*", 404},
		{"encoded slash traversal", "GET", "/orders/..%2F..%2Fetc%2Fpasswd", 404},
		{"dot dot", "GET", "/orders/..", 404},
		{"unicode", "GET", "/orders/%C3%A9v%C3%A9nement", 404},
		{"emoji", "GET", "/orders/%F0%9F%92%A5", 404},
		{"SQL-ish", "GET", "/orders/1%27%20OR%20%271%27%3D%271", 404},
		{"event id instead of order id", "GET", "/orders/evt_" + known, 404},
		{"2000 characters", "GET", "/orders/" + strings.Repeat("a", 2000), 404},
		{"longer than the read buffer", "GET", "/orders/" + strings.Repeat("a", 8000), 431},
		{"nested path", "GET", "/orders/" + known + "/items", 404},
		{"PUT", "PUT", "/orders/" + known, 405},
		{"DELETE", "DELETE", "/orders/" + known, 405},
		{"PATCH", "PATCH", "/orders/" + known, 405},
		{"POST to an order", "POST", "/orders/" + known, 405},
		{"DELETE the collection", "DELETE", "/orders", 405},
		{"GET the collection", "GET", "/orders", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, s.base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%s %.60s = %d %s %s, want %d problem+json", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status)
			}
			var p struct{ Status int }
			if err := json.Unmarshal(body, &p); err != nil || p.Status != tt.status {
				t.Fatalf("problem body %s (%v)", body, err)
			}
		})
	}
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("ORDERS holds %d events after the lookups, want the 1 order", n)
	}
	kv, err := js.KeyValue(context.Background(), natsx.BucketOrders)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for range keys.Keys() {
		n++
	}
	if n != 1 {
		t.Fatalf("orders bucket holds %d keys after the lookups, want 1", n)
	}
	resp, err := http.Get(s.base + "/orders/" + known)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the known order answers %d", resp.StatusCode)
	}
}

// TestNATSOutage: with NATS gone the API answers 503 quickly and reports not
// ready; when NATS returns it recovers by itself.
func TestNATSOutage(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	ns.Shutdown()

	eventually(t, 10*time.Second, "readyz to report 503", func() bool {
		resp, err := http.Get(s.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	r := post(t, s.base+"/orders", "application/json", "outage-1", []byte(validOrder))
	if r.status != 503 || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("POST during outage = %d %s", r.status, r.body)
	}
	if r.elapsed > time.Second {
		t.Fatalf("POST during outage took %s, want under 1 s", r.elapsed)
	}

	ns.Restart(t)
	eventually(t, 20*time.Second, "readyz to recover", func() bool {
		resp, err := http.Get(s.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	r = post(t, s.base+"/orders", "application/json", "outage-1", []byte(validOrder))
	if r.status != 201 {
		t.Fatalf("POST after recovery = %d %s", r.status, r.body)
	}
}

// TestStartsBeforeNATS: the service starts without NATS, is not ready, and
// becomes ready when NATS appears.
func TestStartsBeforeNATS(t *testing.T) {
	ns := natstest.RunServer(t)
	url := ns.URL()
	ns.Shutdown()
	s := startOrders(t, url, false)
	resp, err := http.Get(s.base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz without NATS = %d", resp.StatusCode)
	}
	ns.Restart(t)
	eventually(t, 20*time.Second, "readyz once NATS is up", func() bool {
		resp, err := http.Get(s.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestInvalidConfig(t *testing.T) {
	for _, name := range []string{"ORDERS_ADDR", "PUBLISH_TIMEOUT", "NATS_URL", "LOG_FORMAT", "STREAM_REPLICAS"} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{name: "banana"}
			err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("run with %s=banana = %v, want an error naming it", name, err)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Fatalf("want one line, got %q", err)
			}
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	ns := natstest.RunServer(t)
	s := startOrders(t, ns.URL(), true)
	if r := post(t, s.base+"/orders", "application/json", "", []byte(validOrder)); r.status != 201 {
		t.Fatalf("POST = %d", r.status)
	}
	s.stop()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("run returned %v on shutdown", err)
		}
		s.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("no clean exit within 10 s")
	}
	if _, err := http.Get(s.base + "/healthz"); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}
