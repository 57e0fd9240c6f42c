package service

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"github.com/jethook/jethook/shared/testkit"
)

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		live uint64
		want int
	}{
		{"before the first collection", 0, gcPercentMax},
		{"a small heap gets the most", 2 * mib, gcPercentMax},
		{"a quarter of the headroom grows fourfold", 6 * mib, 400},
		{"between: the heap grows by the headroom", 12 * mib, 200},
		{"at the headroom: Go's default", 24 * mib, 100},
		{"a large heap never goes below the default", 500 * mib, gcPercentMin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gcPercent(tt.live); got != tt.want {
				t.Errorf("gcPercent(%d MiB) = %d, want %d", tt.live/mib, got, tt.want)
			}
		})
	}
}

// gogc reads the collector's percentage as the runtime has it.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

func TestWorthSetting(t *testing.T) {
	tests := []struct {
		name       string
		p, current int
		want       bool
	}{
		{"the first setting", 400, -1, true},
		{"no change", 200, 200, false},
		{"a change under a tenth waits", 190, 200, false},
		{"a change of more than a tenth", 170, 200, true},
		{"Go's default is reached from just above it", 100, 104, true},
		{"the most is reached from just below it", 400, 390, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := worthSetting(tt.p, tt.current); got != tt.want {
				t.Errorf("worthSetting(%d, %d) = %v, want %v", tt.p, tt.current, got, tt.want)
			}
		})
	}
}

func TestTuneGC(t *testing.T) {
	before := gogc()
	t.Cleanup(func() { debug.SetGCPercent(before) })

	t.Run("raises the percentage of a small heap, and puts it back", func(t *testing.T) {
		debug.SetGCPercent(gcPercentMin)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- TuneGC(false)(ctx) }()
		// A test binary's live heap is far below the headroom.
		testkit.Eventually(t, 5*gcTuneEvery, "GOGC to be raised", func() bool { return gogc() > gcPercentMin })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := gogc(); got != gcPercentMin {
			t.Fatalf("GOGC = %d once the tuning stopped, want the %d it found", got, gcPercentMin)
		}
	})

	t.Run("leaves an operator's GOGC alone", func(t *testing.T) {
		debug.SetGCPercent(150)
		if err := TuneGC(true)(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := gogc(); got != 150 {
			t.Fatalf("GOGC = %d after TuneGC with the operator's setting, want 150", got)
		}
	})
}
