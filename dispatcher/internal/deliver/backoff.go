package deliver

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ParseRetryAfter reads a Retry-After header value, either delta-seconds
// or an HTTP-date, as a wait from now. A date in the past means no wait.
// It reports false for an absent or malformed value, including negative
// numbers, which the specification does not allow.
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if value[0] >= '0' && value[0] <= '9' {
		secs, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			// Only an overflow gets here with leading digits and no
			// other characters; such a wait is as good as forever.
			if errors.Is(err, strconv.ErrRange) {
				return maxDuration, true
			}
			return 0, false
		}
		if secs > uint64(maxDuration/time.Second) {
			return maxDuration, true
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(value)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

const maxDuration = time.Duration(1<<63 - 1)

// clamp limits d to [lo, hi]. A receiver's Retry-After is honoured within
// the operator's retry bounds: a tiny value must not cause a hot loop and a
// huge one must not park an event beyond RETRY_MAX.
func clamp(d, lo, hi time.Duration) time.Duration {
	return min(max(d, lo), hi)
}
