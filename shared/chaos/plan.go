package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Kind is one kind of fault.
type Kind string

// The kinds of fault the harness injects. A process fault stops the process
// and starts it again after the fault's duration; a window fault changes how
// a dependency answers for the fault's duration.
const (
	KillOrders     Kind = "kill9:orders"
	KillDispatcher Kind = "kill9:dispatcher"
	KillNotifier   Kind = "kill9:notifier"
	KillNATS       Kind = "kill9:nats-server"
	TermOrders     Kind = "sigterm:orders"
	TermDispatcher Kind = "sigterm:dispatcher"
	TermNotifier   Kind = "sigterm:notifier"
	Webhook500     Kind = "webhook:500"
	Webhook503     Kind = "webhook:503"
	WebhookHang    Kind = "webhook:hang"
	SMTPRefuse     Kind = "smtp:refuse"
	SMTPStall      Kind = "smtp:stall"
)

// The targets of faults: faults on the same target never overlap.
const (
	targetOrders     = "orders"
	targetDispatcher = "dispatcher"
	targetNotifier   = "notifier"
	targetNATS       = "nats-server"
	targetWebhook    = "webhook"
	targetSMTP       = "smtp"
)

// kindSpec says what a kind hits and how long it lasts.
type kindSpec struct {
	target string
	// min and max bound the fault's duration: how long a process stays
	// down, or how long a dependency misbehaves.
	min, max time.Duration
	// recovery is kept free after the fault on the same target, for the
	// process to stop and start again, before the next fault may hit it.
	recovery time.Duration
}

var kindSpecs = map[Kind]kindSpec{
	KillOrders:     {targetOrders, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillDispatcher: {targetDispatcher, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillNotifier:   {targetNotifier, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillNATS:       {targetNATS, 500 * time.Millisecond, 3 * time.Second, 3 * time.Second},
	TermOrders:     {targetOrders, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	TermDispatcher: {targetDispatcher, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	TermNotifier:   {targetNotifier, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	Webhook500:     {targetWebhook, time.Second, 4 * time.Second, time.Second},
	Webhook503:     {targetWebhook, time.Second, 4 * time.Second, time.Second},
	WebhookHang:    {targetWebhook, time.Second, 4 * time.Second, time.Second},
	SMTPRefuse:     {targetSMTP, time.Second, 4 * time.Second, time.Second},
	SMTPStall:      {targetSMTP, time.Second, 4 * time.Second, time.Second},
}

// AllKinds lists every kind of fault, in the order reports show them.
var AllKinds = []Kind{
	KillOrders, KillDispatcher, KillNotifier, KillNATS,
	TermOrders, TermDispatcher, TermNotifier,
	Webhook500, Webhook503, WebhookHang,
	SMTPRefuse, SMTPStall,
}

// Fault is one planned fault.
type Fault struct {
	Kind Kind
	// At is when the fault starts, counted from the start of the load.
	At time.Duration
	// For is how long the process stays down or the dependency misbehaves.
	For time.Duration
}

func (f Fault) String() string {
	return fmt.Sprintf("%7.2fs %-20s for %.2fs", f.At.Seconds(), f.Kind, f.For.Seconds())
}

func (f Fault) target() string { return kindSpecs[f.Kind].target }

// faultWindow is the part of the load during which faults start and end:
// the load runs without faults for a short warm-up first, and for the last
// quarter, so that the redeliveries the last faults cause are under way
// before the load stops.
func faultWindow(d time.Duration) (from, to time.Duration) {
	return min(5*time.Second, d/10), d - d/4
}

// defaultFaults is how many faults a run of duration d plans when the
// configuration does not say: one per four seconds of the fault window,
// and at least one of each kind.
func defaultFaults(d time.Duration, kinds int) int {
	from, to := faultWindow(d)
	return max(int((to-from)/(4*time.Second)), kinds)
}

// Plan returns the fault schedule of cfg, sorted by start. It depends only
// on the seed, the duration, the number of faults and the kinds, so the same
// settings always give the same schedule. Every kind appears at least once
// when there are at least as many faults as kinds; faults on the same
// target never overlap, each one followed by time for the target to
// recover, and every fault ends inside the fault window. A fault that
// finds no room is left out, so the plan may be shorter than asked.
func Plan(cfg Config) []Fault {
	cfg = cfg.withDefaults()
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6a6574686f6f6b)) // "jethook"
	from, to := faultWindow(cfg.Duration)

	kinds := make([]Kind, 0, cfg.Faults)
	for i, p := range rng.Perm(len(cfg.Kinds)) {
		if i == cfg.Faults {
			break
		}
		kinds = append(kinds, cfg.Kinds[p])
	}
	for len(kinds) < cfg.Faults {
		kinds = append(kinds, cfg.Kinds[rng.IntN(len(cfg.Kinds))])
	}

	var plan []Fault
	for _, k := range kinds {
		spec := kindSpecs[k]
		f := Fault{Kind: k, For: spec.min + between(rng, spec.max-spec.min)}
		f.For = f.For.Round(10 * time.Millisecond)
		latest := to - f.For - spec.recovery
		if latest < from {
			continue
		}
		// Random starts first, so that the schedule is spread out; a
		// crowded target falls back to the first free slot.
		placed := false
		for try := 0; try < 50 && !placed; try++ {
			f.At = (from + between(rng, latest-from)).Round(10 * time.Millisecond)
			placed = fits(plan, f)
		}
		if !placed {
			f.At, placed = firstFit(plan, f, from, latest)
		}
		if placed {
			plan = append(plan, f)
		}
	}
	slices.SortFunc(plan, func(a, b Fault) int { return int(a.At - b.At) })
	return plan
}

// firstFit returns the earliest start in [from, latest] at which f fits.
func firstFit(plan []Fault, f Fault, from, latest time.Duration) (time.Duration, bool) {
	for f.At = from; f.At <= latest; f.At += 100 * time.Millisecond {
		if fits(plan, f) {
			return f.At, true
		}
	}
	return 0, false
}

// fits reports whether f overlaps no planned fault on the same target,
// counting each fault's recovery time as part of it.
func fits(plan []Fault, f Fault) bool {
	end := func(g Fault) time.Duration { return g.At + g.For + kindSpecs[g.Kind].recovery }
	for _, g := range plan {
		if g.target() == f.target() && f.At < end(g) && g.At < end(f) {
			return false
		}
	}
	return true
}

// between returns a random duration in [0, d].
func between(rng *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(d) + 1))
}
