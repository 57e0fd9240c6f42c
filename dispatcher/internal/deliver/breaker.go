package deliver

import (
	"net/http"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
)

// BreakerSettings are the circuit breaker's and DISABLE_AFTER's limits.
type BreakerSettings struct {
	// Failures in a row, in one dispatcher process, open the breaker.
	Failures int
	// Cooloff is the first pause; each pause after a failed probe doubles
	// it, up to CooloffMax.
	Cooloff, CooloffMax time.Duration
	// DisableAfter disables a subscription that has failed without a
	// success for this long.
	DisableAfter time.Duration
}

// Changes of a subscription's health, as OPS events, log lines and metrics
// name them.
const (
	changeFailing   = "failing"   // a run of failures opened the breaker for the first time
	changePaused    = "paused"    // the breaker opened: the consumer is paused
	changeResumed   = "resumed"   // enabled again by hand
	changeRecovered = "recovered" // a success closed the breaker
	changeDisabled  = "disabled"  // by hand, 410 Gone, or DISABLE_AFTER
)

// breakerFailure reports whether an attempt's answer counts against the
// endpoint: no answer, a timeout, a 5xx, a 429 or a 404 say the endpoint
// is down, slow, overloaded or missing. A refusal of the content (400,
// 413, 415, 422) is about that one event, and 410 disables the
// subscription by itself.
func breakerFailure(r result) bool {
	switch {
	case r.err == nil:
		return false
	case r.status == http.StatusGone, refusedStatuses[r.status]:
		return false
	}
	return r.attempted
}

// trip applies a run of failures to a subscription's shared health at now,
// for the process that saw them: run is its count of failures in a row and
// since when it has seen them fail. It returns the changes made, in order,
// or none. The rules:
//   - failing without a success for DisableAfter disables it (reason
//     failing);
//   - an enabled subscription whose run reached Failures is paused for
//     Cooloff, and the run is recorded as failing from its start;
//   - a paused subscription whose pause is over was being probed, and the
//     probe failed: it is paused again, twice as long, up to CooloffMax;
//   - a paused subscription whose pause is not over, or a disabled one,
//     is left as it is: another replica got there first.
func (p BreakerSettings) trip(s *subscription.Subscription, h *registry.Health, run int, since, now time.Time) []string {
	var changes []string
	if h.FailingSince == nil && (run >= p.Failures || s.Status == subscription.StatusPaused) {
		h.FailingSince = &since
		changes = append(changes, changeFailing)
	}
	if h.FailingSince != nil && now.Sub(*h.FailingSince) >= p.DisableAfter && s.Status != subscription.StatusDisabled {
		s.SetStatus(subscription.StatusDisabled, subscription.ReasonFailing, now)
		h.PausedUntil, h.Cooloff = nil, 0
		return append(changes, changeDisabled)
	}
	switch {
	case s.Status == subscription.StatusEnabled && run >= p.Failures:
		h.Cooloff = p.Cooloff
	case s.Status == subscription.StatusPaused && (h.PausedUntil == nil || !now.Before(*h.PausedUntil)):
		h.Cooloff = min(max(2*h.Cooloff, p.Cooloff), p.CooloffMax)
	default:
		return changes
	}
	until := now.Add(h.Cooloff)
	h.PausedUntil = &until
	s.SetStatus(subscription.StatusPaused, "", now)
	return append(changes, changePaused)
}

// heal applies a success: a subscription that was paused, or failing, is
// enabled again with its breaker closed.
func heal(s *subscription.Subscription, h *registry.Health, now time.Time) []string {
	if s.Status == subscription.StatusDisabled || (h.FailingSince == nil && s.Status != subscription.StatusPaused) {
		return nil
	}
	*h = registry.Health{}
	s.SetStatus(subscription.StatusEnabled, "", now)
	return []string{changeRecovered}
}

// halfOpen reports whether the breaker of e is waiting for a probe: paused,
// and the pause is over.
func halfOpen(e *registry.Entry, now time.Time) bool {
	return e.Subscription.Status == subscription.StatusPaused &&
		(e.Health.PausedUntil == nil || !now.Before(*e.Health.PausedUntil))
}
