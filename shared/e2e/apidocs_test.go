package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jethook/jethook/shared/event"
)

func loadDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootDir, "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s does not parse: %v", name, err)
	}
	return doc
}

// resolve follows a local JSON pointer such as #/components/schemas/Order.
func resolve(doc map[string]any, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	var cur any = doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// checkRefs fails for every $ref that points nowhere.
func checkRefs(t *testing.T, name string, doc map[string]any) {
	t.Helper()
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, found := resolve(doc, ref); !found {
					t.Errorf("%s: %s: $ref %q points nowhere", name, path, ref)
				}
			}
			for k, child := range v {
				walk(path+"/"+k, child)
			}
		case []any:
			for i, child := range v {
				walk(fmt.Sprintf("%s/%d", path, i), child)
			}
		}
	}
	walk("#", doc)
}

func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// examples returns the named example values of a media type object.
func examples(media any) map[string]any {
	out := map[string]any{}
	if ex, ok := get(media, "examples").(map[string]any); ok {
		for name, e := range ex {
			out[name] = get(e, "value")
		}
	}
	if ex := get(media, "example"); ex != nil {
		out["example"] = ex
	}
	return out
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestAPIDocuments checks docs/openapi.json and docs/asyncapi.json against
// the running system: the documents parse and hang together, every example
// is accepted, the documented answer matches the real one field for field,
// and every documented status can be produced.
func TestAPIDocuments(t *testing.T) {
	openapi, asyncapi := loadDoc(t, "openapi.json"), loadDoc(t, "asyncapi.json")
	if v, _ := openapi["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi version = %q, want 3.1.x", v)
	}
	if v, _ := asyncapi["asyncapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("asyncapi version = %q, want 3.x", v)
	}
	checkRefs(t, "openapi.json", openapi)
	checkRefs(t, "asyncapi.json", asyncapi)

	s := startSystem(t, options{})
	post := func(url, contentType string, body []byte, h http.Header) (int, []byte) {
		if len(body) > 32<<10 {
			return sendOversized(t, http.MethodPost, url, contentType, body, h)
		}
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	getStatus := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	// Every documented order request is accepted, and the answer has exactly
	// the fields of the documented 201 example.
	create := get(openapi, "paths", "/orders", "post")
	reqExamples := examples(get(create, "requestBody", "content", "application/json"))
	if len(reqExamples) == 0 {
		t.Fatal("POST /orders has no request examples")
	}
	documented201, _ := get(create, "responses", "201", "content", "application/json", "example").(map[string]any)
	var anOrderID string
	for name, ex := range reqExamples {
		body, _ := json.Marshal(ex)
		status, b := post(s.ordersURL+"/orders", "application/json", body, nil)
		if status != 201 {
			t.Fatalf("POST /orders example %q = %d %s", name, status, b)
		}
		var got map[string]any
		_ = json.Unmarshal(b, &got)
		if strings.Join(keys(got), ",") != strings.Join(keys(documented201), ",") {
			t.Fatalf("201 answer fields %v differ from the documented example's %v", keys(got), keys(documented201))
		}
		anOrderID, _ = got["order_id"].(string)
		s.waitEmail(anOrderID, 20*time.Second)
	}

	// Every documented event, published to NATS as the AsyncAPI says,
	// travels the whole pipeline into an email.
	var eventExamples []map[string]any
	for _, m := range []string{"orderPaid", "orderPaidWebhook"} {
		exs, _ := get(asyncapi, "components", "messages", m, "examples").([]any)
		if len(exs) == 0 {
			t.Fatalf("asyncapi message %s has no examples", m)
		}
		for _, ex := range exs {
			eventExamples = append(eventExamples, fresh(get(ex, "payload").(map[string]any)))
		}
	}
	published := map[string]bool{}
	for _, payload := range eventExamples {
		body, _ := json.Marshal(payload)
		e, err := event.Decode(body)
		if err != nil {
			t.Fatalf("asyncapi example does not meet the contract: %v", err)
		}
		if published[e.ID] {
			continue
		}
		published[e.ID] = true
		msg := &nats.Msg{Subject: event.Subject(e.Data.OrderID), Data: body, Header: nats.Header{"Nats-Msg-Id": {e.ID}}}
		if _, err := s.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatalf("publishing the example %s: %v", e.ID, err)
		}
		s.waitEmail(e.Data.OrderID, 20*time.Second)
	}

	// The webhook examples of the OpenAPI document, signed, are accepted
	// (as duplicates when the event above already went through).
	webhookOp := get(openapi, "paths", "/webhook/order-paid", "post")
	hookExamples := examples(get(webhookOp, "requestBody", "content", "application/json"))
	for name, ex := range examples(get(openapi, "webhooks", "order.paid", "post", "requestBody", "content", "application/json")) {
		hookExamples["webhooks/"+name] = ex
	}
	for name, ex := range hookExamples {
		e := eventFrom(t, ex)
		h, body := signedWebhook(t, s.secret, e)
		status, b := post(s.notifyURL+"/webhook/order-paid", "", body, h)
		if status != 200 {
			t.Fatalf("webhook example %q = %d %s", name, status, b)
		}
	}

	// The admin API: every request example is accepted, and every
	// documented answer has the real one's fields.
	admin := newAdminAPI(t, s)
	checkAdminExamples(t, admin, openapi)

	// Every documented status can be produced.
	fresh := func() event.OrderPaid { return newEvent(t, "docs@example.com") }
	signedPost := func(mutate func(h http.Header, body []byte) []byte) int {
		h, body := signedWebhook(t, s.secret, fresh())
		body = mutate(h, body)
		status, _ := post(s.notifyURL+"/webhook/order-paid", "", body, h)
		return status
	}
	valid := []byte(`{"product_name":"Book","quantity":1,"price_per_item":1,"customer_email":"ada@example.com"}`)
	producers := map[string]func() int{
		"POST /orders 201": func() int { st, _ := post(s.ordersURL+"/orders", "application/json", valid, nil); return st },
		"POST /orders 400": func() int { st, _ := post(s.ordersURL+"/orders", "application/json", []byte(`{`), nil); return st },
		"POST /orders 409": func() int {
			h := http.Header{"Idempotency-Key": {"docs-409"}}
			post(s.ordersURL+"/orders", "application/json", valid, h)
			st, _ := post(s.ordersURL+"/orders", "application/json", bytes.Replace(valid, []byte(`"quantity":1`), []byte(`"quantity":2`), 1), h)
			return st
		},
		"POST /orders 413": func() int {
			st, _ := post(s.ordersURL+"/orders", "application/json", []byte(`{"product_name":"`+strings.Repeat("x", 100<<10)+`"}`), nil)
			return st
		},
		"POST /orders 415": func() int { st, _ := post(s.ordersURL+"/orders", "text/plain", valid, nil); return st },
		"POST /orders 422": func() int {
			st, _ := post(s.ordersURL+"/orders", "application/json", []byte(`{"product_name":""}`), nil)
			return st
		},
		"GET /orders/{id} 200":         func() int { return getStatus(s.ordersURL + "/orders/" + anOrderID) },
		"GET /orders/{id} 404":         func() int { return getStatus(s.ordersURL + "/orders/0193a5b2-7c1d-7aaa-8bbb-0123456789ff") },
		"GET /healthz 200":             func() int { return getStatus(s.ordersURL + "/healthz") },
		"GET /readyz 200":              func() int { return getStatus(s.notifyURL + "/readyz") },
		"GET /metrics 200":             func() int { return getStatus("http://" + s.dispAddr + "/metrics") },
		"POST /webhook/order-paid 200": func() int { return signedPost(func(_ http.Header, body []byte) []byte { return body }) },
		"POST /webhook/order-paid 400": func() int {
			return signedPost(func(h http.Header, _ []byte) []byte {
				e := fresh()
				body := []byte(`{"id":"` + e.ID + `"`)
				h2, _ := signedWebhookBody(t, s.secret, e.ID, body)
				copyHeader(h, h2)
				return body
			})
		},
		"POST /webhook/order-paid 403": func() int {
			return signedPost(func(h http.Header, body []byte) []byte { h.Set("webhook-signature", "v1,AAAA"); return body })
		},
		"POST /webhook/order-paid 405": func() int { return getStatus(s.notifyURL + "/webhook/order-paid") },
		"POST /webhook/order-paid 413": func() int {
			return signedPost(func(h http.Header, _ []byte) []byte {
				e := fresh()
				body := []byte(`{"id":"` + e.ID + `","pad":"` + strings.Repeat("x", 1<<20) + `"}`)
				h2, _ := signedWebhookBody(t, s.secret, e.ID, body)
				copyHeader(h, h2)
				return body
			})
		},
		"POST /webhook/order-paid 415": func() int {
			return signedPost(func(h http.Header, body []byte) []byte { h.Set("Content-Type", "text/plain"); return body })
		},
		"POST /webhook/order-paid 422": func() int {
			return signedPost(func(h http.Header, _ []byte) []byte {
				e := fresh()
				e.Data.Quantity = 0
				body, _ := json.Marshal(e)
				h2, _ := signedWebhookBody(t, s.secret, e.ID, body)
				copyHeader(h, h2)
				return body
			})
		},
	}
	// The 503s need NATS gone; they run last.
	outage := map[string]func() int{
		"POST /orders 503":             producers["POST /orders 201"],
		"GET /orders/{id} 503":         producers["GET /orders/{id} 200"],
		"GET /readyz 503":              producers["GET /readyz 200"],
		"POST /webhook/order-paid 503": producers["POST /webhook/order-paid 200"],
	}
	adminProduced, adminOutage := adminProducers(t, admin)
	for k, p := range adminProduced {
		producers[k] = p
	}
	for k, p := range adminOutage {
		outage[k] = p
	}

	var documented []string
	for path, item := range get(openapi, "paths").(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "servers" || method == "parameters" {
				continue
			}
			for status := range get(op, "responses").(map[string]any) {
				documented = append(documented, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}
	sort.Strings(documented)
	for _, key := range documented {
		if producers[key] == nil && outage[key] == nil {
			t.Errorf("documented %s cannot be produced by this test", key)
		}
	}
	for key := range producers {
		if !containsString(documented, key) {
			t.Errorf("%s happens but is not documented", key)
		}
	}
	check := func(key string, produce func() int) {
		want, _ := strconv.Atoi(key[strings.LastIndexByte(key, ' ')+1:])
		if got := produce(); got != want {
			t.Errorf("%s: got %d", key, got)
		}
	}
	for _, key := range documented {
		if p := producers[key]; p != nil {
			check(key, p)
		}
	}
	admin.cleanup()
	s.nats.Shutdown()
	waitHTTP(t, s.ordersURL+"/readyz", 503, 10*time.Second)
	waitHTTP(t, s.notifyURL+"/readyz", 503, 10*time.Second)
	// An admin request waits out its timeout against a NATS that is gone
	// before it answers 503: they run at once.
	var wg sync.WaitGroup
	for _, key := range documented {
		if p := outage[key]; p != nil {
			wg.Go(func() { check(key, p) })
		}
	}
	wg.Wait()
}

// sendOversized sends a body over the server's limit the way a streaming
// client does: it reads the answer while still writing, since the server
// answers 413 and closes without reading the rest (a client that only reads
// after writing sees a reset instead).
func sendOversized(t *testing.T, method, rawURL, contentType string, body []byte, h http.Header) (int, []byte) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := http.Header{}
	copyHeader(head, h)
	if contentType != "" {
		head.Set("Content-Type", contentType)
	}
	go func() {
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", method, u.RequestURI(), u.Host, len(body))
		_ = head.Write(&b)
		b.WriteString("\r\n")
		_, _ = conn.Write(b.Bytes())
		_, _ = conn.Write(body)
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to a %d-byte body: %v", len(body), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// fresh returns a copy of a documented event dated now. The documents carry
// a fixed date, and the notifier rightly refuses events older than
// PROCESSED_TTL (their duplicates could no longer be detected); everything
// else in the example is sent as documented.
func fresh(payload map[string]any) map[string]any {
	out := make(map[string]any, len(payload))
	for k, v := range payload {
		out[k] = v
	}
	out["timestamp"] = time.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
	return out
}

func eventFrom(t *testing.T, v any) event.OrderPaid {
	t.Helper()
	if m, ok := v.(map[string]any); ok {
		v = fresh(m)
	}
	b, _ := json.Marshal(v)
	e, err := event.Decode(b)
	if err != nil {
		t.Fatalf("documented event does not meet the contract: %v", err)
	}
	return e
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}
