package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/shared/webhook"
	"github.com/jethook/jethook/shared/webhook/fiberwebhook"
)

// testLimit is the MaxBodyBytes of the receiver tests: small, so that the
// oversized cases are cheap, and below Fiber's own default BodyLimit, so
// that the library's limit is the one that refuses them.
const testLimit = 1024

// hookPath is where the test servers receive webhooks.
const hookPath = "/hooks/jethook"

// echo is what the test handler behind either middleware answers: what it
// was handed, so that a test sees exactly that.
type echo struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Body      string `json:"body"`
	// Reread is the request body read again by the handler.
	Reread string `json:"reread"`
}

// adapter puts a Verifier in front of the echo handler on a real server
// on 127.0.0.1 and returns the webhook URL.
type adapter struct {
	name  string
	serve func(t *testing.T, v webhook.Verifier) string
}

var adapters = []adapter{
	{"net/http", serveHTTP},
	{"fiber", serveFiber},
}

func serveHTTP(t *testing.T, v webhook.Verifier) string {
	mux := http.NewServeMux()
	mux.Handle("POST "+hookPath, v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, ok := webhook.FromContext(r.Context())
		if !ok {
			http.Error(w, "no message in the context", http.StatusInternalServerError)
			return
		}
		reread, err := io.ReadAll(r.Body)
		if err != nil || r.ContentLength != int64(len(reread)) {
			http.Error(w, "body not readable again", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{msg.ID, msg.Timestamp.Unix(), string(msg.Body), string(reread)})
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + hookPath
}

func serveFiber(t *testing.T, v webhook.Verifier) string {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post(hookPath, fiberwebhook.New(v), func(c *fiber.Ctx) error {
		msg, ok := fiberwebhook.Message(c)
		if !ok {
			return c.Status(http.StatusInternalServerError).SendString("no message in the context")
		}
		return c.JSON(echo{msg.ID, msg.Timestamp.Unix(), string(msg.Body), string(c.Request().Body())})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	return "http://" + ln.Addr().String() + hookPath
}

// client opens a connection per request: a refused oversized body closes
// its connection, and a test must not trip over that on the next one.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

type answer struct {
	status      int
	contentType string
	body        []byte
}

func post(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header.Get("Content-Type"), b}
}

// signedRequest is a webhook to url signed with secret at ts, as jethook's
// dispatcher signs one.
func signedRequest(t *testing.T, url, secret, id string, ts time.Time, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	webhook.SetHeaders(req.Header, []webhook.Secret{mustSecret(t, secret)}, id, ts, body)
	return req
}

// chunked makes req send its body without a Content-Length.
func chunked(req *http.Request, body []byte) {
	req.ContentLength = -1
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = nil
}

// problemDetail is the refusal body both middlewares must write.
type problemDetail struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
}

func TestMiddleware(t *testing.T) {
	at := time.Unix(ts0, 0)
	body := []byte(body0)
	big := []byte(`{"pad":"` + strings.Repeat("x", testLimit) + `"}`)
	exact := []byte(`{"pad":"` + strings.Repeat("x", testLimit-10) + `"}`)
	// edited builds the valid webhook with its header changed by edit.
	edited := func(edit func(h http.Header)) func(t *testing.T, url string) *http.Request {
		return func(t *testing.T, url string) *http.Request {
			req := signedRequest(t, url, secretA, msgID, at, body)
			edit(req.Header)
			return req
		}
	}
	tests := []struct {
		name string
		// request builds the request to url.
		request    func(t *testing.T, url string) *http.Request
		wantStatus int
		wantDetail string // for a refusal
		wantErr    error  // for a refusal, what Receive's error matches
		wantBody   []byte // for 200; nil means body
	}{
		{
			name:       "valid",
			request:    func(t *testing.T, url string) *http.Request { return signedRequest(t, url, secretA, msgID, at, body) },
			wantStatus: 200,
		},
		{
			name: "signed with the verifier's other secret",
			request: func(t *testing.T, url string) *http.Request {
				return signedRequest(t, url, secretC, msgID, at, body)
			},
			wantStatus: 200,
		},
		{
			name: "media type with a charset, Content-Encoding identity in capitals",
			request: edited(func(h http.Header) {
				h.Set("Content-Type", "application/json; charset=utf-8")
				h.Set("Content-Encoding", "IDENTITY")
			}),
			wantStatus: 200,
		},
		{
			name:       "body of exactly the limit",
			request:    func(t *testing.T, url string) *http.Request { return signedRequest(t, url, secretA, msgID, at, exact) },
			wantStatus: 200, wantBody: exact,
		},
		{
			name: "body of the limit, chunked",
			request: func(t *testing.T, url string) *http.Request {
				req := signedRequest(t, url, secretA, msgID, at, exact)
				chunked(req, exact)
				return req
			},
			wantStatus: 200, wantBody: exact,
		},
		{
			name: "no webhook headers",
			request: edited(func(h http.Header) {
				for _, name := range []string{webhook.HeaderID, webhook.HeaderTimestamp, webhook.HeaderSignature} {
					h.Del(name)
				}
			}),
			wantStatus: 403, wantErr: webhook.ErrMissingHeader,
			wantDetail: "signature verification failed: webhook: missing header: webhook-id",
		},
		{
			name: "no signature",
			request: edited(func(h http.Header) {
				h.Del(webhook.HeaderSignature)
			}),
			wantStatus: 403, wantErr: webhook.ErrMissingHeader,
			wantDetail: "signature verification failed: webhook: missing header: webhook-signature",
		},
		{
			name:       "unknown secret",
			request:    func(t *testing.T, url string) *http.Request { return signedRequest(t, url, secretB, msgID, at, body) },
			wantStatus: 403, wantErr: webhook.ErrNoMatchingSignature,
			wantDetail: "signature verification failed: webhook: no matching signature",
		},
		{
			name: "tampered body",
			request: func(t *testing.T, url string) *http.Request {
				req := signedRequest(t, url, secretA, msgID, at, body)
				tampered := []byte(`{"test": 2432232315}`)
				req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(tampered)), int64(len(tampered))
				return req
			},
			wantStatus: 403, wantErr: webhook.ErrNoMatchingSignature,
			wantDetail: "signature verification failed: webhook: no matching signature",
		},
		{
			name: "stale",
			request: func(t *testing.T, url string) *http.Request {
				return signedRequest(t, url, secretA, msgID, at.Add(-6*time.Minute), body)
			},
			wantStatus: 403, wantErr: webhook.ErrTimestampTooOld,
			wantDetail: "signature verification failed: webhook: timestamp too old: 360s in the past, tolerance is 5m0s",
		},
		{
			name: "from the future",
			request: func(t *testing.T, url string) *http.Request {
				return signedRequest(t, url, secretA, msgID, at.Add(6*time.Minute), body)
			},
			wantStatus: 403, wantErr: webhook.ErrTimestampTooNew,
			wantDetail: "signature verification failed: webhook: timestamp too new: 360s in the future, tolerance is 5m0s",
		},
		{
			name: "webhook-id sent twice",
			request: edited(func(h http.Header) {
				h.Add(webhook.HeaderID, "msg_other")
			}),
			wantStatus: 403, wantErr: webhook.ErrRepeatedHeader,
			wantDetail: "signature verification failed: webhook-id header sent more than once",
		},
		{
			name: "webhook-timestamp sent twice",
			request: edited(func(h http.Header) {
				h.Add(webhook.HeaderTimestamp, strconv.Itoa(ts0))
			}),
			wantStatus: 403, wantErr: webhook.ErrRepeatedHeader,
			wantDetail: "signature verification failed: webhook-timestamp header sent more than once",
		},
		{
			name: "webhook-signature sent twice, both valid",
			request: edited(func(h http.Header) {
				h.Add(webhook.HeaderSignature, sig0)
			}),
			wantStatus: 403, wantErr: webhook.ErrRepeatedHeader,
			wantDetail: "signature verification failed: webhook-signature header sent more than once",
		},
		{
			name: "text/plain",
			request: edited(func(h http.Header) {
				h.Set("Content-Type", "text/plain")
			}),
			wantStatus: 415, wantErr: webhook.ErrUnsupportedMediaType,
			wantDetail: "Content-Type must be application/json",
		},
		{
			name: "no Content-Type",
			request: edited(func(h http.Header) {
				h.Del("Content-Type")
			}),
			wantStatus: 415, wantErr: webhook.ErrUnsupportedMediaType,
			wantDetail: "Content-Type must be application/json",
		},
		{
			name: "gzip, signed over the bytes on the wire",
			request: edited(func(h http.Header) {
				h.Set("Content-Encoding", "gzip")
			}),
			wantStatus: 415, wantErr: webhook.ErrUnsupportedMediaType,
			wantDetail: "Content-Encoding gzip is not supported",
		},
		{
			name: "a Content-Encoding too long to repeat",
			request: edited(func(h http.Header) {
				h.Set("Content-Encoding", strings.Repeat("x", 100))
			}),
			wantStatus: 415, wantErr: webhook.ErrUnsupportedMediaType,
			wantDetail: "Content-Encoding must be identity",
		},
		{
			name: "forged and text/plain: the media type is checked first",
			request: func(t *testing.T, url string) *http.Request {
				req := signedRequest(t, url, secretB, msgID, at, body)
				req.Header.Set("Content-Type", "text/plain")
				return req
			},
			wantStatus: 415, wantErr: webhook.ErrUnsupportedMediaType,
			wantDetail: "Content-Type must be application/json",
		},
		{
			name:       "body over the limit",
			request:    func(t *testing.T, url string) *http.Request { return signedRequest(t, url, secretA, msgID, at, big) },
			wantStatus: 413, wantErr: webhook.ErrBodyTooLarge,
			wantDetail: "body is larger than 1024 bytes",
		},
		{
			name: "body over the limit, chunked",
			request: func(t *testing.T, url string) *http.Request {
				req := signedRequest(t, url, secretA, msgID, at, big)
				chunked(req, big)
				return req
			},
			wantStatus: 413, wantErr: webhook.ErrBodyTooLarge,
			wantDetail: "body is larger than 1024 bytes",
		},
		{
			name: "unsigned and over the limit by its Content-Length: 413 before any signature check",
			request: func(t *testing.T, url string) *http.Request {
				req := signedRequest(t, url, secretA, msgID, at, big)
				req.Header.Del(webhook.HeaderSignature)
				return req
			},
			wantStatus: 413, wantErr: webhook.ErrBodyTooLarge,
			wantDetail: "body is larger than 1024 bytes",
		},
		{
			name: "unsigned, chunked and over the limit: 403 before the body is read",
			request: func(t *testing.T, url string) *http.Request {
				req := signedRequest(t, url, secretA, msgID, at, big)
				req.Header.Del(webhook.HeaderSignature)
				chunked(req, big)
				return req
			},
			wantStatus: 403, wantErr: webhook.ErrMissingHeader,
			wantDetail: "signature verification failed: webhook: missing header: webhook-signature",
		},
	}
	v := webhook.Verifier{
		Secrets:      []webhook.Secret{mustSecret(t, secretC), mustSecret(t, secretA)},
		Now:          fixedNow(ts0),
		MaxBodyBytes: testLimit,
	}
	// Each adapter's answers, by case, to compare them byte for byte.
	answers := map[string][]answer{}
	for _, ad := range adapters {
		url := ad.serve(t, v)
		for _, tt := range tests {
			t.Run(ad.name+"/"+tt.name, func(t *testing.T) {
				got := post(t, tt.request(t, url))
				answers[tt.name] = append(answers[tt.name], got)
				if got.status != tt.wantStatus {
					t.Fatalf("status = %d, want %d; body %s", got.status, tt.wantStatus, got.body)
				}
				for _, s := range []string{secretA, secretB, secretC} {
					if bytes.Contains(got.body, []byte(s[len("whsec_"):])) {
						t.Fatalf("answer %s contains a secret", got.body)
					}
				}
				if tt.wantStatus == 200 {
					checkEcho(t, got, tt.wantBody, body)
					return
				}
				checkProblem(t, got, tt.wantStatus, tt.wantDetail)
			})
		}
	}
	// The refusals are the library's own, so both must be the same bytes.
	for _, tt := range tests {
		if a := answers[tt.name]; tt.wantStatus != 200 && len(a) == 2 && (a[0].status != a[1].status || !bytes.Equal(a[0].body, a[1].body)) {
			t.Errorf("%s: net/http answered %d %s, Fiber %d %s", tt.name, a[0].status, a[0].body, a[1].status, a[1].body)
		}
	}
	// Receive itself, as a caller in another framework would use it, gives
	// the same decisions and a cause that errors.Is can tell apart.
	for _, tt := range tests {
		t.Run("Receive/"+tt.name, func(t *testing.T) {
			req := tt.request(t, "http://127.0.0.1"+hookPath)
			msg, err := v.Receive(req.Header, req.ContentLength, req.Body)
			if tt.wantStatus == 200 {
				if err != nil || msg.ID != msgID {
					t.Fatalf("Receive = %+v, %v; want message %s", msg, err, msgID)
				}
				return
			}
			var ref *webhook.Refusal
			if !errors.As(err, &ref) || ref.Status != tt.wantStatus || ref.Detail != tt.wantDetail || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Receive error = %#v, want a %d refusal %q matching %v", err, tt.wantStatus, tt.wantDetail, tt.wantErr)
			}
		})
	}
}

// checkEcho asserts that the handler was handed the message: its id, its
// timestamp and its body, which it could also read again from the request.
func checkEcho(t *testing.T, got answer, wantBody, defaultBody []byte) {
	t.Helper()
	if wantBody == nil {
		wantBody = defaultBody
	}
	var e echo
	if err := json.Unmarshal(got.body, &e); err != nil {
		t.Fatalf("handler answered %s: %v", got.body, err)
	}
	want := echo{msgID, ts0, string(wantBody), string(wantBody)}
	if e != want {
		t.Fatalf("handler was handed %+v, want %+v", e, want)
	}
}

// checkProblem asserts that a refusal is the problem+json that jethook's
// services write.
func checkProblem(t *testing.T, got answer, status int, detail string) {
	t.Helper()
	if got.contentType != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", got.contentType)
	}
	var p problemDetail
	if err := json.Unmarshal(got.body, &p); err != nil {
		t.Fatalf("refusal body %s: %v", got.body, err)
	}
	want := problemDetail{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Instance: hookPath}
	if p != want {
		t.Fatalf("refusal %+v, want %+v", p, want)
	}
}

func TestMiddlewareWithoutSecretsAnswers500(t *testing.T) {
	for _, ad := range adapters {
		t.Run(ad.name, func(t *testing.T) {
			url := ad.serve(t, webhook.Verifier{Now: fixedNow(ts0)})
			got := post(t, signedRequest(t, url, secretA, msgID, time.Unix(ts0, 0), []byte(body0)))
			checkProblem(t, got, 500, "the webhook receiver has no signing secret configured")
		})
	}
}

// countingReader is an endless body that counts what was read of it.
type countingReader struct{ n int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	r.n += int64(len(p))
	return len(p), nil
}

// The size limit protects memory only if an oversized body is never read
// whole: not at all when its Content-Length says so, and not past one
// byte over the limit when it comes without one.
func TestMiddlewareReadsNoMoreThanTheLimit(t *testing.T) {
	v := webhook.Verifier{Secrets: []webhook.Secret{mustSecret(t, secretA)}, Now: fixedNow(ts0), MaxBodyBytes: testLimit}
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler called for an oversized body") })
	tests := []struct {
		name          string
		contentLength int64
		maxRead       int64
	}{
		{"declared 10 GiB", 10 << 30, 0},
		{"no Content-Length", -1, testLimit + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &countingReader{}
			req := httptest.NewRequest(http.MethodPost, hookPath, io.NopCloser(body))
			req.ContentLength = tt.contentLength
			req.Header.Set("Content-Type", "application/json")
			webhook.SetHeaders(req.Header, v.Secrets, msgID, time.Unix(ts0, 0), nil)
			w := httptest.NewRecorder()
			v.Middleware(next).ServeHTTP(w, req)
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("status = %d, want 413; body %s", w.Code, w.Body)
			}
			if body.n > tt.maxRead {
				t.Fatalf("read %d bytes of the body, want at most %d", body.n, tt.maxRead)
			}
		})
	}
}

func TestFromContext(t *testing.T) {
	if _, ok := webhook.FromContext(context.Background()); ok {
		t.Fatal("FromContext found a message in an empty context")
	}
	want := webhook.Message{ID: msgID, Timestamp: time.Unix(ts0, 0).UTC(), Body: []byte(body0)}
	got, ok := webhook.FromContext(webhook.NewContext(context.Background(), want))
	if !ok || got.ID != want.ID || !got.Timestamp.Equal(want.Timestamp) || !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("FromContext = %+v, %v; want %+v", got, ok, want)
	}
}

// The message outlives the request: Fiber reuses a request's memory for
// the next one, and a handler may hand the message to another goroutine.
func TestFiberMessageIsACopy(t *testing.T) {
	v := webhook.Verifier{Secrets: []webhook.Secret{mustSecret(t, secretA)}, Now: fixedNow(ts0)}
	kept := make(chan webhook.Message, 2)
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post(hookPath, fiberwebhook.New(v), func(c *fiber.Ctx) error {
		msg, _ := fiberwebhook.Message(c)
		kept <- msg
		return c.SendStatus(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	url := "http://" + ln.Addr().String() + hookPath

	// Two requests on one kept-alive connection, so that Fiber reuses the
	// first one's buffers for the second.
	keepAlive := &http.Client{Timeout: 10 * time.Second}
	bodies := []string{`{"n":"first request"}`, `{"n":"the second!!"}`}
	ids := []string{"msg_aaaaaaaaaaaa", "msg_bbbbbbbbbbbb"}
	for i := range bodies {
		resp, err := keepAlive.Do(signedRequest(t, url, secretA, ids[i], time.Unix(ts0, 0), []byte(bodies[i])))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("request %d: status %d", i+1, resp.StatusCode)
		}
	}
	for i := range bodies {
		msg := <-kept
		if msg.ID != ids[i] || string(msg.Body) != bodies[i] {
			t.Errorf("message %d kept as %s %s, want %s %s", i+1, msg.ID, msg.Body, ids[i], bodies[i])
		}
	}
}

// statusWriter is the least a handler can answer through, so that the
// benchmark measures the middleware rather than a recorder.
type statusWriter struct {
	header http.Header
	status int
}

func (w *statusWriter) Header() http.Header         { return w.header }
func (w *statusWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *statusWriter) WriteHeader(status int)      { w.status = status }

// BenchmarkMiddleware measures a webhook's way through the middleware to
// the handler, and what a refused one costs: a stale one or one declared
// too large costs neither a read of its body nor an HMAC.
func BenchmarkMiddleware(b *testing.B) {
	secrets := []webhook.Secret{mustSecret(b, secretA)}
	v := webhook.Verifier{Secrets: secrets, Now: fixedNow(ts0)}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := v.Middleware(next)
	small := []byte(strings.Repeat(`{"k":"v"},`, 100))
	large := bytes.Repeat([]byte("x"), webhook.DefaultMaxBodyBytes)
	tests := []struct {
		name          string
		body          []byte
		signedAt      int64
		contentLength int64
		want          int
	}{
		{"accepted/1KB", small, ts0, int64(len(small)), http.StatusNoContent},
		{"accepted/1MiB", large, ts0, int64(len(large)), http.StatusNoContent},
		{"accepted/1MiB_chunked", large, ts0, -1, http.StatusNoContent},
		{"stale/1MiB", large, ts0 - 3600, int64(len(large)), http.StatusForbidden},
		{"declared_too_large/1MiB", large, ts0, 10 << 20, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, hookPath, nil)
			req.Header.Set("Content-Type", "application/json")
			webhook.SetHeaders(req.Header, secrets, msgID, time.Unix(tt.signedAt, 0), tt.body)
			rd := bytes.NewReader(tt.body)
			w := &statusWriter{header: http.Header{}}
			if tt.want == http.StatusNoContent {
				// A refused body is not read: its bytes are no throughput.
				b.SetBytes(int64(len(tt.body)))
			}
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(tt.body)
				req.Body, req.ContentLength = io.NopCloser(rd), tt.contentLength
				w.status = 0
				h.ServeHTTP(w, req)
				if w.status != tt.want {
					b.Fatalf("status %d, want %d", w.status, tt.want)
				}
			}
		})
	}
}
