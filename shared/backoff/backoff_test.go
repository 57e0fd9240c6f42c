package backoff

import (
	"math"
	"testing"
	"time"
)

func TestExponential(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name     string
		base     time.Duration
		ceiling  time.Duration
		attempt  uint64
		min, max time.Duration
	}{
		{"attempt 0 is treated as the first", 50 * ms, 200 * ms, 0, 50 * ms, 50 * ms},
		{"first attempt never below base", 50 * ms, 200 * ms, 1, 50 * ms, 50 * ms},
		{"second attempt doubles", 50 * ms, 200 * ms, 2, 50 * ms, 100 * ms},
		{"third attempt reaches the cap", 50 * ms, 200 * ms, 3, 100 * ms, 200 * ms},
		{"later attempts stay capped", 50 * ms, 200 * ms, 10, 100 * ms, 200 * ms},
		{"huge attempt does not overflow", 50 * ms, 200 * ms, 1 << 40, 100 * ms, 200 * ms},
		{"max uint64 attempt", 50 * ms, 200 * ms, math.MaxUint64, 100 * ms, 200 * ms},
		{"defaults, fifth attempt", time.Second, time.Hour, 5, 8 * time.Second, 16 * time.Second},
		{"defaults, capped at an hour", time.Second, time.Hour, 13, 30 * time.Minute, time.Hour},
		{"base equals cap", time.Second, time.Second, 7, time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 500 {
				d := Exponential(tt.base, tt.ceiling, tt.attempt)
				if d < tt.min || d > tt.max {
					t.Fatalf("Exponential(%s, %s, %d) = %s, want within [%s, %s]", tt.base, tt.ceiling, tt.attempt, d, tt.min, tt.max)
				}
				if d < tt.base || d > tt.ceiling {
					t.Fatalf("Exponential = %s outside [base, cap]", d)
				}
				seen[d] = true
			}
			if tt.min < tt.max && len(seen) < 2 {
				t.Errorf("Exponential has no jitter: always %v", seen)
			}
		})
	}
}
