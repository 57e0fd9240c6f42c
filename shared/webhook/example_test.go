package webhook_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

// exampleSecret is the secret of the examples; a real one comes from the
// service's configuration, such as WEBHOOK_SECRET.
const exampleSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// exampleWebhook is a webhook as jethook's dispatcher sends it, signed now.
func exampleWebhook(secrets []webhook.Secret, body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/webhooks/jethook", bytes.NewReader([]byte(body)))
	req.Header.Set("Content-Type", "application/json")
	webhook.SetHeaders(req.Header, secrets, "evt_1", time.Now(), []byte(body))
	return req
}

// A net/http service receives webhooks behind Middleware: its handler sees
// only verified ones.
func ExampleVerifier_Middleware() {
	secrets, err := webhook.ParseSecrets(exampleSecret)
	if err != nil {
		log.Fatal(err)
	}
	v := webhook.Verifier{Secrets: secrets}
	mux := http.NewServeMux()
	mux.Handle("POST /webhooks/jethook", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, _ := webhook.FromContext(r.Context())
		// msg.Body is verified: parse it now, and drop duplicates by msg.ID.
		fmt.Printf("%s: %s\n", msg.ID, msg.Body)
		w.WriteHeader(http.StatusNoContent)
	})))

	w := httptest.NewRecorder()
	mux.ServeHTTP(w, exampleWebhook(secrets, `{"type":"order.paid"}`))
	fmt.Println(w.Code)
	// Output:
	// evt_1: {"type":"order.paid"}
	// 204
}

// A webhook signed with another secret never reaches the handler: the
// middleware answers it with problem+json.
func ExampleVerifier_Middleware_refused() {
	secrets, _ := webhook.ParseSecrets(exampleSecret)
	v := webhook.Verifier{Secrets: secrets}
	h := v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("not reached")
	}))

	other, _ := webhook.ParseSecrets("whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IGtleQ==")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, exampleWebhook(other, `{"type":"order.paid"}`))
	fmt.Println(w.Code, w.Header().Get("Content-Type"))
	fmt.Println(w.Body)
	// Output:
	// 403 application/problem+json
	// {"type":"about:blank","title":"Forbidden","status":403,"detail":"signature verification failed: webhook: no matching signature","instance":"/webhooks/jethook"}
}

// Secrets are rotated without downtime: the receiver accepts either while
// the sender moves from the old one to the new.
func ExampleParseSecrets() {
	oldSecret, newSecret := exampleSecret, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	secrets, err := webhook.ParseSecrets(newSecret + "," + oldSecret)
	if err != nil {
		log.Fatal(err)
	}
	v := webhook.Verifier{Secrets: secrets}

	old, _ := webhook.ParseSecrets(oldSecret)
	w := httptest.NewRecorder()
	accepted := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	v.Middleware(accepted).ServeHTTP(w, exampleWebhook(old, `{}`))
	fmt.Println(len(secrets), "secrets; signed with the old one:", w.Code)
	// Output:
	// 2 secrets; signed with the old one: 204
}

// Receive is for code that answers refusals itself, here to log why, or
// that runs on another framework.
func ExampleVerifier_Receive() {
	secrets, _ := webhook.ParseSecrets(exampleSecret)
	v := webhook.Verifier{Secrets: secrets}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := http.MaxBytesReader(w, r.Body, webhook.DefaultMaxBodyBytes)
		msg, err := v.Receive(r.Header, r.ContentLength, body)
		var refusal *webhook.Refusal
		if errors.As(err, &refusal) {
			fmt.Println("refused:", refusal.Status, "stale:", errors.Is(err, webhook.ErrTimestampTooOld))
			refusal.ServeHTTP(w, r)
			return
		}
		fmt.Printf("%s: %s\n", msg.ID, msg.Body)
	})

	// A webhook signed ten minutes ago, replayed now.
	req := exampleWebhook(secrets, `{"type":"order.paid"}`)
	webhook.SetHeaders(req.Header, secrets, "evt_1", time.Now().Add(-10*time.Minute), []byte(`{"type":"order.paid"}`))
	h.ServeHTTP(httptest.NewRecorder(), req)
	// Output:
	// refused: 403 stale: true
}

// A sender signs the raw body it is about to send; SetHeaders sets the
// three Standard Webhooks headers from one timestamp.
func ExampleSetHeaders() {
	secrets, _ := webhook.ParseSecrets(exampleSecret)
	body := []byte(`{"test": 2432232314}`)
	req, _ := http.NewRequest(http.MethodPost, "https://receiver.example/webhooks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	webhook.SetHeaders(req.Header, secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), body)
	fmt.Println(req.Header.Get(webhook.HeaderTimestamp))
	fmt.Println(req.Header.Get(webhook.HeaderSignature))
	// Output:
	// 1614265330
	// v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}
