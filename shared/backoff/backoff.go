// Package backoff spaces retries: exponential delays with jitter, so that a
// failing dependency is not hammered and failures that happened together are
// not all retried in the same instant.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Exponential returns how long to wait after failed attempt number attempt
// (1-based, JetStream's NumDelivered) before the next one: base doubled per
// attempt and capped at ceiling. The result is spread uniformly over the
// upper half of that step so that events that failed together, for instance
// during a receiver outage, are not all retried in the same instant; it is
// never below base nor above ceiling.
func Exponential(base, ceiling time.Duration, attempt uint64) time.Duration {
	step := ceiling
	if shift := max(attempt, 1) - 1; shift < 63 && base <= ceiling>>shift {
		step = base << shift
	}
	half := step / 2
	d := half + rand.N(step-half+1)
	return min(max(d, base), ceiling)
}
