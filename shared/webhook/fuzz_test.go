package webhook_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

// FuzzVerify checks that Verify never panics and never accepts a message
// unless the signature header carries exactly what Sign would produce.
func FuzzVerify(f *testing.F) {
	a, b := mustSecret(f, secretA), mustSecret(f, secretB)
	secrets := []webhook.Secret{a, b}
	ts := strconv.Itoa(ts0)

	f.Add(msgID, ts, sig0, []byte(body0))
	f.Add(msgID, ts, webhook.Sign(secrets, msgID, time.Unix(ts0, 0), []byte(body0)), []byte(body0))
	f.Add("evt_1", strconv.Itoa(ts0-299), webhook.Sign([]webhook.Secret{b}, "evt_1", time.Unix(ts0-299, 0), nil), []byte{})
	f.Add(msgID, ts, "v1a,"+sig0[3:]+"  v1,"+sig0[3:], []byte(body0))
	f.Add(msgID, "01614265330", sig0, []byte(body0))
	f.Add(msgID, "-9223372036854775808", sig0, []byte(body0))
	f.Add("", "", "", []byte(nil))
	f.Add("msg with space", ts, "v1,", []byte("\x00"))
	f.Add(msgID, ts, strings.Repeat("v1,", 2000), []byte(body0))

	v := webhook.Verifier{Secrets: secrets, Now: fixedNow(ts0)}
	f.Fuzz(func(t *testing.T, id, timestamp, signature string, body []byte) {
		if err := v.Verify(id, timestamp, signature, body); err != nil {
			return
		}
		n, err := strconv.ParseInt(timestamp, 10, 64)
		if err != nil {
			t.Fatalf("accepted non-integer timestamp %q", timestamp)
		}
		want := strings.Fields(webhook.Sign(secrets, id, time.Unix(n, 0), body))
		for _, entry := range strings.Fields(signature) {
			for _, w := range want {
				if entry == w {
					return
				}
			}
		}
		t.Fatalf("accepted id=%q ts=%q sig=%q body=%q without a matching v1 entry %q", id, timestamp, signature, body, want)
	})
}

// FuzzMiddleware checks that the middleware never panics, answers only
// with the statuses it documents, hands a request on only when Verify
// accepts exactly what it hands on, and never refuses a well-formed, signed
// webhook.
func FuzzMiddleware(f *testing.F) {
	a, b := mustSecret(f, secretA), mustSecret(f, secretB)
	const limit = 256
	v := webhook.Verifier{Secrets: []webhook.Secret{a, b}, Now: fixedNow(ts0), MaxBodyBytes: limit}
	ts := strconv.Itoa(ts0)
	signedB := webhook.Sign([]webhook.Secret{b}, msgID, time.Unix(ts0, 0), []byte(body0))

	f.Add(msgID, ts, sig0, "application/json", "", []byte(body0), false, false)
	f.Add(msgID, ts, signedB, "application/json; charset=utf-8", "identity", []byte(body0), true, false)
	f.Add(msgID, ts, sig0, "application/json", "", []byte(body0), false, true)
	f.Add(msgID, ts, sig0, "text/plain", "", []byte(body0), false, false)
	f.Add(msgID, ts, sig0, "application/json", "gzip", []byte(body0), false, false)
	f.Add(msgID, ts, sig0, "application/json;", "", []byte(body0), false, false)
	f.Add(msgID, ts, sig0, "application/json", "", []byte(strings.Repeat("x", limit+1)), true, false)
	f.Add("", "", "", "", "", []byte(nil), false, false)

	f.Fuzz(func(t *testing.T, id, timestamp, signature, contentType, encoding string, body []byte, chunked, idTwice bool) {
		req := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
		for name, value := range map[string]string{
			webhook.HeaderID: id, webhook.HeaderTimestamp: timestamp, webhook.HeaderSignature: signature,
			"Content-Type": contentType, "Content-Encoding": encoding,
		} {
			if value != "" {
				req.Header.Set(name, value)
			}
		}
		if idTwice {
			req.Header.Add(webhook.HeaderID, id)
		}
		if chunked {
			req.ContentLength = -1
		}
		const handedOn = 299
		var handed webhook.Message
		h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			msg, ok := webhook.FromContext(r.Context())
			reread, err := io.ReadAll(r.Body)
			if !ok || err != nil || !bytes.Equal(reread, msg.Body) {
				t.Fatalf("handler got message %v (%v), body read again %q (%v)", msg, ok, reread, err)
			}
			handed = msg
			w.WriteHeader(handedOn)
		}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)

		wellFormed := contentType == "application/json" && encoding == "" && len(body) <= limit && !idTwice
		verified := v.Verify(id, timestamp, signature, body) == nil
		switch w.Code {
		case handedOn:
			if !verified || len(body) > limit || idTwice {
				t.Fatalf("handed on id=%q ts=%q sig=%q body=%q (twice=%v), which Verify or the limits refuse", id, timestamp, signature, body, idTwice)
			}
			if handed.ID != id || handed.Timestamp.Unix() != mustAtoi(t, timestamp) || !bytes.Equal(handed.Body, body) {
				t.Fatalf("handed on %+v for id=%q ts=%q body=%q", handed, id, timestamp, body)
			}
		case http.StatusForbidden, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			if wellFormed && verified {
				t.Fatalf("refused (%d %s) a signed, well-formed webhook id=%q ts=%q body=%q", w.Code, w.Body, id, timestamp, body)
			}
			var p struct{ Status int }
			if w.Header().Get("Content-Type") != "application/problem+json" || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != w.Code {
				t.Fatalf("refusal %d is not problem+json: %q", w.Code, w.Body)
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
