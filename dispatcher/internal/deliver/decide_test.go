package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	const base, ceiling = 50 * time.Millisecond, 200 * time.Millisecond
	d := New(nil, nil, Settings{RetryBase: base, RetryMax: ceiling, MaxDeliver: 3}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil)
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}

	tests := []struct {
		name     string
		err      error
		delivery uint64
		verdict  verdict
		min, max time.Duration // for retry
	}{
		{"2xx acks", nil, 1, ack, 0, 0},
		{"2xx on the last attempt acks", nil, 3, ack, 0, 0},
		{"connection error retries with backoff", refused, 1, retry, base, base},
		{"timeout retries with backoff", context.DeadlineExceeded, 2, retry, base, 2 * base},
		{"500 retries with backoff", &StatusError{Status: 500}, 2, retry, base, 2 * base},
		{"302 is a failure", &StatusError{Status: 302}, 1, retry, base, base},
		{"500 ignores Retry-After", &StatusError{Status: 500, RetryAfter: ceiling, HasRetryAfter: true}, 1, retry, base, base},
		{"429 honours Retry-After", &StatusError{Status: 429, RetryAfter: 120 * time.Millisecond, HasRetryAfter: true}, 1, retry, 120 * time.Millisecond, 120 * time.Millisecond},
		{"503 honours Retry-After", &StatusError{Status: 503, RetryAfter: 80 * time.Millisecond, HasRetryAfter: true}, 2, retry, 80 * time.Millisecond, 80 * time.Millisecond},
		{"Retry-After clamped to max", &StatusError{Status: 429, RetryAfter: time.Hour, HasRetryAfter: true}, 1, retry, ceiling, ceiling},
		{"Retry-After clamped to base", &StatusError{Status: 503, RetryAfter: 0, HasRetryAfter: true}, 1, retry, base, base},
		{"429 without Retry-After backs off", &StatusError{Status: 429}, 1, retry, base, base},
		{"failure on the last attempt dead-letters", &StatusError{Status: 500}, 3, deadLetter, 0, 0},
		{"Retry-After on the last attempt still dead-letters", &StatusError{Status: 429, RetryAfter: base, HasRetryAfter: true}, 3, deadLetter, 0, 0},
		{"no attempts left dead-letters", fmt.Errorf("%w: spare", ErrExhausted), 4, deadLetter, 0, 0},
		{"permanent dead-letters at once", &PermanentError{Err: errors.New("body has no event id")}, 1, deadLetter, 0, 0},
		{"shutdown retries even on the last attempt", fmt.Errorf("%w: %w", errInterrupted, context.Canceled), 3, retry, base, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := d.decide(tt.err, tt.delivery)
			if got.verdict != tt.verdict {
				t.Fatalf("decide(%v, %d) = %+v, want verdict %d", tt.err, tt.delivery, got, tt.verdict)
			}
			if got.verdict == retry && (got.delay < tt.min || got.delay > tt.max) {
				t.Errorf("delay %s, want within [%s, %s]", got.delay, tt.min, tt.max)
			}
			if got.verdict == deadLetter && got.reason == "" {
				t.Error("dead-letter decision without a reason")
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

func TestHeaderValue(t *testing.T) {
	got := headerValue("line one\r\nline two\tend" + strings.Repeat("é", 400))
	if strings.ContainsAny(got, "\r\n\t") {
		t.Errorf("headerValue kept control characters: %q", got)
	}
	if len(got) > maxErrorHeaderLen || !strings.HasPrefix(got, "line one  line two end") {
		t.Errorf("headerValue = %q (%d bytes)", got, len(got))
	}
	if !strings.HasSuffix(got, "é") {
		t.Errorf("headerValue cut a character in half: %q", got[len(got)-4:])
	}
}
