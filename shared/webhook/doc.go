// Package webhook signs and verifies webhooks as Standard Webhooks v1
// (HMAC-SHA256 over "id.timestamp.body", carried in the webhook-id,
// webhook-timestamp and webhook-signature headers) on raw request bytes,
// and receives them over HTTP. jethook's dispatcher signs with it and its
// notifier receives with it; any Go service can use it to receive
// jethook's webhooks, or those of any Standard Webhooks sender.
//
// # Receiving
//
// A Verifier holds the secrets (several during a rotation, as ParseSecrets
// reads them from one comma-separated setting), the timestamp Tolerance and
// the body limit. Its Middleware lets only verified webhooks through to a
// net/http handler, which finds the message with FromContext:
//
//	secrets, err := webhook.ParseSecrets(cfg.WebhookSecret)
//	if err != nil {
//		return err
//	}
//	v := webhook.Verifier{Secrets: secrets}
//	mux.Handle("POST /webhooks/jethook", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		msg, _ := webhook.FromContext(r.Context())
//		// msg.Body is the raw body, verified: parse it only now.
//		// msg.ID is the same on every retry: drop duplicates by it.
//		w.WriteHeader(http.StatusNoContent)
//	})))
//
// Every other request is answered as application/problem+json: 403 for a
// forged, stale or unsigned webhook or a webhook header sent twice, 413 for
// a body over the limit (refused by its Content-Length before it is read),
// 415 for a body that is not plain JSON. Verifier.Receive documents the
// checks and their order; call it directly to receive webhooks in another
// framework or to log refusals. Package fiberwebhook does the same for
// Fiber apps.
//
// Two things stay with the handler: dropping duplicates by Message.ID,
// because senders deliver at least once, and answering 2xx before the
// sender's timeout.
//
// # Sending
//
// SetHeaders signs an outgoing request's raw body with every current
// secret, so that receivers holding either the old or the new secret accept
// it during a rotation. GenerateSecret makes a new secret.
//
// Secrets never appear in errors, refusals or formatted output.
package webhook
