package service

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The garbage collector's settings while the operator leaves GOGC unset.
// A service's live heap is a few MiB, so Go's default (GOGC=100: collect
// when the heap has doubled) runs the collector every few MiB of
// requests, and on two cores that is about a tenth of the pipeline's
// throughput. Allowing the heap to grow by about gcHeadroom instead (Go
// adds the stacks and globals to the live heap, a few hundred KiB), up to
// gcPercentMax, costs about that much memory more than the default at
// most: once the live heap passes gcHeadroom the percentage is Go's
// default again.
const (
	gcHeadroom   = 24 << 20
	gcPercentMin = 100
	gcPercentMax = 400
	// gcTuneEvery spaces the readings of the live heap.
	gcTuneEvery = time.Second
)

// gcPercent is the GOGC that lets a live heap of live bytes grow by
// gcHeadroom before the next collection, within [gcPercentMin,
// gcPercentMax].
func gcPercent(live uint64) int {
	if live == 0 {
		return gcPercentMax
	}
	return int(min(max(uint64(gcHeadroom)*100/live, gcPercentMin), gcPercentMax))
}

// TuneGC returns background work for Run that keeps the collector's
// percentage at gcPercent of the live heap until ctx ends, and then puts
// back the percentage it found. When the operator set GOGC (operatorSet),
// the runtime's own setting stands and the work returns at once.
// GOMEMLIMIT, when set, bounds the heap on top of either.
func TuneGC(operatorSet bool) func(context.Context) error {
	return func(ctx context.Context) error {
		if operatorSet {
			return nil
		}
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		current, found := -1, 0
		defer func() {
			if current >= 0 {
				debug.SetGCPercent(found)
			}
		}()
		t := time.NewTicker(gcTuneEvery)
		defer t.Stop()
		for {
			metrics.Read(live)
			if p := gcPercent(live[0].Value.Uint64()); worthSetting(p, current) {
				if prev := debug.SetGCPercent(p); current < 0 {
					found = prev
				}
				current = p
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}

// worthSetting reports whether the percentage p should replace current
// (-1 before the first): a change under a tenth is not worth the
// collector's pacing being redone, but either bound is always reached, so
// that a large heap gets Go's default exactly.
func worthSetting(p, current int) bool {
	switch {
	case p == current:
		return false
	case current < 0, p == gcPercentMin, p == gcPercentMax:
		return true
	}
	return p*10 < current*9 || p*10 > current*11
}
