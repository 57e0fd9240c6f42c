package deliver

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"seconds", "120", 120 * time.Second, true},
		{"zero", "0", 0, true},
		{"spaces around", " 5 ", 5 * time.Second, true},
		{"HTTP-date ahead", now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{"HTTP-date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"RFC 850 date", "Saturday, 28-Nov-26 10:01:00 GMT", time.Minute, true},
		{"overflowing seconds", "99999999999999999999999", maxDuration, true},
		{"seconds beyond a Duration", "9999999999999", maxDuration, true},
		{"empty", "", 0, false},
		{"negative", "-5", 0, false},
		{"plus sign", "+5", 0, false},
		{"fraction", "1.5", 0, false},
		{"unit", "5s", 0, false},
		{"garbage", "banana", 0, false},
		{"ISO date", "2026-11-28T10:00:30Z", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.value, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tt.value, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestClamp(t *testing.T) {
	const lo, hi = time.Second, time.Minute
	tests := []struct {
		name string
		d    time.Duration
		want time.Duration
	}{
		{"below", 0, lo},
		{"inside", 10 * time.Second, 10 * time.Second},
		{"above", time.Hour, hi},
		{"forever", maxDuration, hi},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clamp(tt.d, lo, hi); got != tt.want {
				t.Errorf("clamp(%s) = %s, want %s", tt.d, got, tt.want)
			}
		})
	}
}
