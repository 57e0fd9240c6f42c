package chaos

import (
	"slices"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want int // faults planned
	}{
		{"default two minutes", Config{Seed: 1, Duration: 2 * time.Minute}, 42},
		{"short run", shortConfig(), 18},
		{"crowded two minutes", Config{Seed: 1, Duration: 2 * time.Minute, Faults: 120}, 112},
		{"fewer faults than kinds", Config{Seed: 3, Duration: time.Minute, Faults: 4}, 4},
		{"one kind", Config{Seed: 4, Duration: time.Minute, Faults: 3, Kinds: []Kind{KillNATS}}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := Plan(tt.cfg)
			if len(plan) != tt.want {
				t.Fatalf("planned %d faults, want %d:\n%v", len(plan), tt.want, plan)
			}
			if again := Plan(tt.cfg); !slices.Equal(plan, again) {
				t.Fatalf("the same seed gave another plan:\n%v\n%v", plan, again)
			}
			cfg := tt.cfg.withDefaults()
			from, to := faultWindow(cfg.Duration)
			seen := map[Kind]bool{}
			for i, f := range plan {
				seen[f.Kind] = true
				if f.At < from || f.At+f.For > to {
					t.Errorf("%s is outside the fault window [%s, %s]", f, from, to)
				}
				if i > 0 && f.At < plan[i-1].At {
					t.Errorf("plan not sorted at %d", i)
				}
				if !fits(slices.Delete(slices.Clone(plan), i, i+1), f) {
					t.Errorf("%s overlaps another fault on %s", f, f.target())
				}
			}
			if len(plan) >= len(cfg.Kinds) {
				for _, k := range cfg.Kinds {
					if !seen[k] {
						t.Errorf("kind %s missing from the plan", k)
					}
				}
			}
		})
	}
}

func TestPlanDependsOnSeed(t *testing.T) {
	a := Plan(Config{Seed: 1, Duration: 2 * time.Minute})
	b := Plan(Config{Seed: 2, Duration: 2 * time.Minute})
	if slices.Equal(a, b) {
		t.Fatal("seeds 1 and 2 gave the same plan")
	}
}

// TestPlanKeepsNotifierStopsOutOfSlowWindows: no notifier is killed or
// stopped while the relay is slow to answer the final dot, or while its last
// slow answers are due, however crowded the schedule; other faults may
// overlap a slow window.
func TestPlanKeepsNotifierStopsOutOfSlowWindows(t *testing.T) {
	for seed := range int64(10) {
		plan := Plan(Config{Seed: seed, Duration: 2 * time.Minute, Faults: 150})
		var slow, stops, others int
		for _, s := range plan {
			if s.Kind != SMTPSlow {
				continue
			}
			slow++
			busyUntil := s.At + s.For + slowDotLatency
			for _, f := range plan {
				overlaps := f.At < busyUntil && s.At < f.At+f.For+kindSpecs[f.Kind].recovery
				switch {
				case !overlaps:
				case stopsNotifier(f.Kind):
					stops++
					t.Errorf("seed %d: %s overlaps the slow window %s", seed, f, s)
				case f.target() != targetSMTP:
					others++
				}
			}
		}
		if slow == 0 {
			t.Fatalf("seed %d: no slow window in a crowded plan:\n%v", seed, plan)
		}
		if seed == 0 && others == 0 {
			t.Errorf("no other fault overlaps a slow window: the exclusion is wider than it needs to be")
		}
	}
}
