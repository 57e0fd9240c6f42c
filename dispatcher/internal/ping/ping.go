// Package ping sends a subscription's endpoint a signed webhook.test
// event on demand (POST /v1/subscriptions/{id}/ping) and records the
// attempt in the attempt log, so that an operator can check an endpoint,
// its reachability through the SSRF guard and its signature verification
// without waiting for an order.
package ping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/webhook"
)

// maxDrain is how much of an answer is read in all, so that the
// connection can be reused; past it, the connection is dropped.
const maxDrain = 64 << 10

// Pinger sends pings.
type Pinger struct {
	// Client posts the webhook: the SSRF guard's client, which dials only
	// allowed addresses and follows no redirect.
	Client *http.Client
	// Attempts records each ping; nil records nothing.
	Attempts *attempt.Log
	// UserAgent is sent as the User-Agent header, as for every webhook.
	UserAgent string
	Logger    *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Ping sends a webhook.test event to the subscription's URL now, signed
// with the secrets that sign at this moment, records the attempt (source
// "ping") and returns it. A receiver that fails, refuses or cannot be
// reached is the attempt's outcome, not an error; Ping fails only when the
// event cannot be made.
func (p *Pinger) Ping(ctx context.Context, e registry.Entry) (attempt.Record, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	sub := e.Subscription
	ev, err := event.NewWebhookTest(sub.ID, now())
	if err != nil {
		return attempt.Record{}, err
	}
	body, err := ev.Marshal()
	if err != nil {
		return attempt.Record{}, err
	}
	rec := attempt.Record{SubscriptionID: sub.ID, EventID: ev.ID, Attempt: 1, Source: attempt.SourcePing}
	start := now()
	rec.StartedAt = start.UTC()
	status, excerpt, err := p.post(ctx, sub.URL, ev.ID, body, e.SigningSecrets(start))
	rec.DurationMS = now().Sub(start).Milliseconds()
	rec.Status, rec.Response = status, excerpt
	rec.Outcome = attempt.OutcomeDelivered
	if err != nil {
		rec.Outcome, rec.Error = attempt.OutcomeFailed, describe(err)
	}
	p.Attempts.Add(rec)
	p.Logger.Info("ping sent", "subscription_id", sub.ID, "event_id", ev.ID, "status", status,
		"outcome", rec.Outcome, "duration_ms", rec.DurationMS)
	return rec, nil
}

// post sends one signed webhook and returns the status (0 without an
// answer), the start of the answer, and nil for 2xx.
func (p *Pinger) post(ctx context.Context, target, id string, body []byte, secrets []webhook.Secret) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", p.UserAgent)
	webhook.SetHeaders(req.Header, secrets, id, time.Now(), body)
	resp, err := p.Client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, attempt.MaxResponse))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, attempt.Excerpt(head), fmt.Errorf("receiver answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return resp.StatusCode, attempt.Excerpt(head), nil
}

// describe is the attempt log's error: the guard's own words for a
// refused address, and never the URL, whose query may hold a token.
func describe(err error) string {
	if re, ok := ssrf.Refused(err); ok {
		return re.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
