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
// throughput. Allowing the heap to grow by gcHeadroom instead, up to
// gcPercentMax, costs that much memory at most, whatever the live heap:
// once it passes gcHeadroom the percentage is Go's default again.
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
// percentage at gcPercent of the live heap until ctx ends. When the
// operator set GOGC (operatorSet), the runtime's own setting stands and
// the work returns at once. GOMEMLIMIT, when set, bounds the heap on top
// of either.
func TuneGC(operatorSet bool) func(context.Context) error {
	return func(ctx context.Context) error {
		if operatorSet {
			return nil
		}
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		current := -1
		t := time.NewTicker(gcTuneEvery)
		defer t.Stop()
		for {
			metrics.Read(live)
			// A change under a tenth is not worth the collector's pacing
			// being redone.
			if p := gcPercent(live[0].Value.Uint64()); current < 0 || p*10 < current*9 || p*10 > current*11 {
				debug.SetGCPercent(p)
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
