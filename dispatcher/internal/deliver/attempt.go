package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/tracing"
	"github.com/jethook/jethook/shared/webhook"
)

// Version is the dispatcher's release, sent in the User-Agent header.
const Version = "0.1.0"

// UserAgent identifies the sender to webhook receivers.
const UserAgent = "jethook/" + Version

// maxDrain is how much of a response body is read before the connection is
// released. Receivers answer with a status; a bigger body is not worth
// reading, and a partly read body only costs the connection's reuse.
const maxDrain = 64 << 10

// maxEventIDLen matches what Standard Webhooks receivers accept as a
// webhook-id.
const maxEventIDLen = 256

// StatusError is a receiver's answer outside 2xx. Redirects are failures
// too: a webhook endpoint that moved must be reconfigured, not followed.
type StatusError struct {
	Status int
	// RetryAfter is the receiver's Retry-After header, when it sent a
	// valid one (HasRetryAfter). Whether it is honoured is decided by
	// decide, from the status.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("receiver answered %d %s", e.Status, http.StatusText(e.Status))
}

// PermanentError is a failure that no retry can fix, such as a body
// without an event id. The event goes to DEADLETTER at once.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// ErrExhausted means the event arrived with no attempt left: the earlier
// deliveries did not finish (the process stopped mid-attempt) or their
// dead-letter copy failed. The consumer's MaxDeliver is unlimited, so that
// such a delivery reaches the dispatcher, which dead-letters the event
// instead of the server dropping it silently.
var ErrExhausted = errors.New("no delivery attempts left")

// errRefused marks a status that says the receiver read the webhook and
// refuses its content; the same bytes sent again cannot fare better.
var errRefused = errors.New("the receiver refuses the content")

// errInterrupted means shutdown cancelled an attempt. It is not the
// receiver's fault, so it never dead-letters an event.
var errInterrupted = errors.New("delivery interrupted by shutdown")

// eventID reads the "id" field of an event body, the one field the
// dispatcher needs; the body itself is posted unchanged. The id becomes the
// webhook-id header and part of a NATS message id, so it must be a short
// run of printable ASCII.
func eventID(body []byte) (string, error) {
	var head struct {
		ID string `json:"id"`
	}
	// A body as the services write it is read in one pass; any other
	// the long way, with encoding/json's verdict.
	if id, ok := event.PlainID(body); ok {
		head.ID = id
	} else if err := json.Unmarshal(body, &head); err != nil {
		return "", fmt.Errorf("body is not an event: %w", err)
	}
	switch {
	case head.ID == "":
		return "", errors.New("body has no event id")
	case len(head.ID) > maxEventIDLen:
		return "", fmt.Errorf("event id is %d bytes, limit is %d", len(head.ID), maxEventIDLen)
	case strings.ContainsFunc(head.ID, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "", errors.New("event id contains a character outside printable ASCII")
	}
	return head.ID, nil
}

// target is where one webhook goes: a subscription's URL, signed with
// its secrets of the moment.
type target struct {
	url     string
	secrets []webhook.Secret
}

// answer is what a receiver said to one attempt.
type answer struct {
	status int    // 0 when there was no answer
	body   string // the start of the answer, for the attempt log
}

// post sends one signed webhook and returns the receiver's answer and nil
// for 2xx, a *StatusError for any other status, or the transport error.
// Cancelling ctx interrupts the attempt.
func post(ctx context.Context, client *http.Client, t target, id string, body []byte) (a answer, err error) {
	ctx, span := startAttempt(ctx, t.url, id)
	defer func() { endAttempt(span, a, err) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return answer{}, &PermanentError{Err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	// The signature carries the attempt's own time, so that a retry hours
	// later is still within the receiver's timestamp tolerance.
	webhook.SetHeaders(req.Header, t.secrets, id, time.Now(), body)
	// The receiver may continue the trace: the traceparent header.
	tracing.InjectHTTP(ctx, req.Header)

	resp, err := client.Do(req)
	if err != nil {
		// The error names the URL, and goes to logs, the attempt log and
		// dead letters: a token in its query or userinfo must not.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = config.RedactURL(ue.URL)
		}
		// The runtime cancels in-flight work at the end of the shutdown
		// grace; a message timeout is a deadline, and a failure.
		if errors.Is(ctx.Err(), context.Canceled) {
			return answer{}, fmt.Errorf("%w: %w", errInterrupted, err)
		}
		// The guard's refusal says all there is to say; the chain around
		// it would repeat the URL.
		if re, ok := ssrf.Refused(err); ok {
			return answer{}, re
		}
		return answer{}, err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, attempt.MaxResponse))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	a = answer{status: resp.StatusCode, body: attempt.Excerpt(head)}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return a, nil
	}
	se := &StatusError{Status: resp.StatusCode}
	se.RetryAfter, se.HasRetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return a, se
}
