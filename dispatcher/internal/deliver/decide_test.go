package deliver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/consume"
)

func TestDecide(t *testing.T) {
	const base, ceiling = 50 * time.Millisecond, 400 * time.Millisecond
	p := policy{retryBase: base, retryMax: ceiling, maxDeliver: 4}
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	ra := func(status int, d time.Duration) error {
		return &StatusError{Status: status, RetryAfter: d, HasRetryAfter: true}
	}

	tests := []struct {
		name     string
		err      error
		attempt  uint64
		verdict  consume.Verdict
		reason   string
		min, max time.Duration // for a retry
	}{
		{"2xx acks", nil, 1, consume.VerdictAck, "", 0, 0},
		{"2xx on the last attempt acks", nil, 4, consume.VerdictAck, "", 0, 0},
		{"connection error retries with backoff", refused, 1, consume.VerdictRetry, "", base, base},
		{"timeout retries with backoff", context.DeadlineExceeded, 2, consume.VerdictRetry, "", base, 2 * base},
		{"500 retries with backoff", &StatusError{Status: 500}, 3, consume.VerdictRetry, "", 2 * base, 4 * base},
		{"302 is a failure", &StatusError{Status: 302}, 1, consume.VerdictRetry, "", base, base},
		{"401 may be passing: retried", &StatusError{Status: 401}, 1, consume.VerdictRetry, "", base, base},
		{"404 may be passing: retried", &StatusError{Status: 404}, 1, consume.VerdictRetry, "", base, base},
		{"408 retried", &StatusError{Status: 408}, 1, consume.VerdictRetry, "", base, base},
		{"500 ignores Retry-After", ra(500, ceiling), 1, consume.VerdictRetry, "", base, base},
		{"429 Retry-After longer than the backoff wins", ra(429, 300*time.Millisecond), 1, consume.VerdictRetry, "", 300 * time.Millisecond, 300 * time.Millisecond},
		{"503 Retry-After longer than the backoff wins", ra(503, 80*time.Millisecond), 1, consume.VerdictRetry, "", 80 * time.Millisecond, 80 * time.Millisecond},
		{"503 Retry-After shorter than the backoff is a floor only", ra(503, time.Millisecond), 3, consume.VerdictRetry, "", 2 * base, 4 * base},
		{"503 Retry-After zero keeps the backoff", ra(503, 0), 2, consume.VerdictRetry, "", base, 2 * base},
		{"Retry-After clamped to RETRY_MAX", ra(429, time.Hour), 1, consume.VerdictRetry, "", ceiling, ceiling},
		{"429 without Retry-After backs off", &StatusError{Status: 429}, 1, consume.VerdictRetry, "", base, base},
		{"400 refuses the content: dead-lettered at once", &StatusError{Status: 400}, 1, consume.VerdictDeadLetter, reasonRefused, 0, 0},
		{"413 refuses the content", &StatusError{Status: 413}, 1, consume.VerdictDeadLetter, reasonRefused, 0, 0},
		{"415 refuses the content", &StatusError{Status: 415}, 1, consume.VerdictDeadLetter, reasonRefused, 0, 0},
		{"422 (a stale event, say) refuses the content", &StatusError{Status: 422}, 1, consume.VerdictDeadLetter, reasonRefused, 0, 0},
		{"410 the endpoint is gone", &StatusError{Status: 410}, 1, consume.VerdictDeadLetter, reasonGone, 0, 0},
		{"failure on the last attempt dead-letters", &StatusError{Status: 500}, 4, consume.VerdictDeadLetter, reasonMaxDeliveries, 0, 0},
		{"Retry-After on the last attempt still dead-letters", ra(429, base), 4, consume.VerdictDeadLetter, reasonMaxDeliveries, 0, 0},
		{"no attempts left dead-letters", fmt.Errorf("%w: spare", ErrExhausted), 5, consume.VerdictDeadLetter, reasonMaxDeliveries, 0, 0},
		{"permanent dead-letters at once", &PermanentError{Err: errors.New("body has no event id")}, 1, consume.VerdictDeadLetter, reasonPermanent, 0, 0},
		{"shutdown retries even on the last attempt", fmt.Errorf("%w: %w", errInterrupted, context.Canceled), 4, consume.VerdictRetry, "", base, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 20 { // the backoff is jittered: every draw must hold
				got := decide(p, result{eventID: "evt_1", attempts: tt.attempt, err: tt.err})
				if got.Verdict != tt.verdict || got.Reason != tt.reason {
					t.Fatalf("decide(%v, %d) = %v %q, want %v %q", tt.err, tt.attempt, got.Verdict, got.Reason, tt.verdict, tt.reason)
				}
				if got.Verdict == consume.VerdictRetry && (got.Delay < tt.min || got.Delay > tt.max) {
					t.Fatalf("delay %s, want within [%s, %s]", got.Delay, tt.min, tt.max)
				}
				if got.Verdict == consume.VerdictAck && !got.Confirm {
					t.Fatal("a delivered webhook's ack must be confirmed: a lost ack costs a duplicate")
				}
				if got.Verdict == consume.VerdictDeadLetter && got.Headers.Get(consume.HeaderEventID) != "evt_1" {
					t.Fatalf("dead letter without its event id header: %v", got.Headers)
				}
			}
		})
	}
}

// TestRetrySpanWhateverTheReceiverAnswers: with the default settings the
// fifteen attempts of an event span at least the backoff's 1.6 hours,
// whether the receiver answers 500 or 503 with a short Retry-After, and
// at most fourteen RETRY_MAX waits with the longest Retry-After.
func TestRetrySpanWhateverTheReceiverAnswers(t *testing.T) {
	p := policy{retryBase: time.Second, retryMax: time.Hour, maxDeliver: 15}
	for _, tc := range []struct {
		name     string
		err      error
		min, max time.Duration
	}{
		{"500", &StatusError{Status: 500}, 5500 * time.Second, 11295 * time.Second},
		{"503 with Retry-After: 1", &StatusError{Status: 503, RetryAfter: time.Second, HasRetryAfter: true}, 5500 * time.Second, 11295 * time.Second},
		{"429 with Retry-After: 86400", &StatusError{Status: 429, RetryAfter: 24 * time.Hour, HasRetryAfter: true}, 14 * time.Hour, 14 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var span time.Duration
			for attempt := uint64(1); ; attempt++ {
				d := decide(p, result{attempts: attempt, err: tc.err})
				if d.Verdict == consume.VerdictDeadLetter {
					if attempt != 15 {
						t.Fatalf("dead-lettered on attempt %d, want 15", attempt)
					}
					break
				}
				span += d.Delay
			}
			if span < tc.min || span > tc.max {
				t.Fatalf("retry span %s, want within [%s, %s]", span, tc.min, tc.max)
			}
		})
	}
}

func TestEventID(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string
		wantErr string
	}{
		{"event", `{"id":"evt_1","type":"order.paid","data":{"order_id":"x"}}`, "evt_1", ""},
		{"id only", `{"id":"evt_2"}`, "evt_2", ""},
		{"not JSON", `hello`, "", "not an event"},
		{"empty body", ``, "", "not an event"},
		{"array", `[1,2]`, "", "not an event"},
		{"id missing", `{"type":"order.paid"}`, "", "no event id"},
		{"id not a string", `{"id":42}`, "", "not an event"},
		{"id with a space", `{"id":"evt 1"}`, "", "printable ASCII"},
		{"id with a newline", `{"id":"evt\n1"}`, "", "printable ASCII"},
		{"id too long", `{"id":"` + strings.Repeat("a", 257) + `"}`, "", "limit is 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := eventID([]byte(tt.body))
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("eventID = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("eventID error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// BenchmarkDecide is the decision for one answered webhook: a 2xx, and a
// 503 with Retry-After, which every delivery of an event goes through.
func BenchmarkDecide(b *testing.B) {
	p := policy{retryBase: time.Second, retryMax: time.Hour, maxDeliver: 15}
	for _, tc := range []struct {
		name string
		r    result
	}{
		{"2xx", result{eventID: "evt_1", orderID: "o", attempts: 1, status: 200, attempted: true}},
		{"503 with Retry-After", result{eventID: "evt_1", orderID: "o", attempts: 3, status: 503, attempted: true,
			err: &StatusError{Status: 503, RetryAfter: 5 * time.Second, HasRetryAfter: true}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = decide(p, tc.r)
			}
		})
	}
}

// BenchmarkEventID reads the id of an order.paid body, the one field the
// dispatcher parses.
func BenchmarkEventID(b *testing.B) {
	body := []byte(`{"id":"evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60","type":"order.paid","timestamp":"2026-11-28T10:00:00Z","data":{"order_id":"0193a5b2-7c1d-7aaa-8bbb-0123456789ab","customer_email":"ada@example.com","product_name":"Book","quantity":2,"amount_minor":2100,"currency":"USD"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eventID(body); err != nil {
			b.Fatal(err)
		}
	}
}
