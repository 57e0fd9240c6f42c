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
// a dependency answers for the fault's duration. The dispatcher and the
// notifier run as two replicas each, and each replica is a target of its
// own: one may be down while the other works, or both at once.
const (
	KillOrders      Kind = "kill9:orders"
	KillDispatcher1 Kind = "kill9:dispatcher-1"
	KillDispatcher2 Kind = "kill9:dispatcher-2"
	KillNotifier1   Kind = "kill9:notifier-1"
	KillNotifier2   Kind = "kill9:notifier-2"
	KillNATS        Kind = "kill9:nats-server"
	TermOrders      Kind = "sigterm:orders"
	TermDispatcher1 Kind = "sigterm:dispatcher-1"
	TermDispatcher2 Kind = "sigterm:dispatcher-2"
	TermNotifier1   Kind = "sigterm:notifier-1"
	TermNotifier2   Kind = "sigterm:notifier-2"
	Webhook500      Kind = "webhook:500"
	Webhook503      Kind = "webhook:503"
	Webhook429      Kind = "webhook:429"
	WebhookHang     Kind = "webhook:hang"
	SMTPRefuse      Kind = "smtp:refuse"
	SMTPStall       Kind = "smtp:stall"
	SMTPReject      Kind = "smtp:reject"
	SMTPSlow        Kind = "smtp:slow"
	// AdminThrottle lowers sub_notifier's rate_limit_per_s through the
	// admin API for a while: its deliveries are held, again and again,
	// and must spend no attempt.
	AdminThrottle Kind = "admin:throttle"
)

// The targets of faults: faults on the same target never overlap. A
// process's target is also its name in the logs.
const (
	targetOrders      = "orders"
	targetDispatcher1 = "dispatcher-1"
	targetDispatcher2 = "dispatcher-2"
	targetNotifier1   = "notifier-1"
	targetNotifier2   = "notifier-2"
	targetNATS        = "nats-server"
	targetWebhook     = "webhook"
	targetSMTP        = "smtp"
	targetAdmin       = "admin"
)

// slowDotLatency is how long the relay takes to answer the final "." of
// each message during an smtp:slow window: seconds, as a relay that scans
// or relays synchronously takes.
const slowDotLatency = 2 * time.Second

// kindSpec says what a kind hits and how long it lasts.
type kindSpec struct {
	target string
	// min and max bound the fault's duration: how long a process stays
	// down, or how long a dependency misbehaves.
	min, max time.Duration
	// recovery is kept free after the fault on the same target, for the
	// process to stop and start again, or for the dependency's last slow
	// answers to arrive, before the next fault may hit it.
	recovery time.Duration
}

var kindSpecs = map[Kind]kindSpec{
	KillOrders:      {targetOrders, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillDispatcher1: {targetDispatcher1, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillDispatcher2: {targetDispatcher2, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillNotifier1:   {targetNotifier1, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillNotifier2:   {targetNotifier2, 300 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second},
	KillNATS:        {targetNATS, 500 * time.Millisecond, 3 * time.Second, 3 * time.Second},
	TermOrders:      {targetOrders, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	TermDispatcher1: {targetDispatcher1, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	TermDispatcher2: {targetDispatcher2, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	TermNotifier1:   {targetNotifier1, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	TermNotifier2:   {targetNotifier2, 300 * time.Millisecond, 2 * time.Second, 4 * time.Second},
	Webhook500:      {targetWebhook, time.Second, 4 * time.Second, time.Second},
	Webhook503:      {targetWebhook, time.Second, 4 * time.Second, time.Second},
	Webhook429:      {targetWebhook, time.Second, 4 * time.Second, time.Second},
	WebhookHang:     {targetWebhook, time.Second, 4 * time.Second, time.Second},
	SMTPRefuse:      {targetSMTP, time.Second, 4 * time.Second, time.Second},
	SMTPStall:       {targetSMTP, time.Second, 4 * time.Second, time.Second},
	SMTPReject:      {targetSMTP, 2 * time.Second, 5 * time.Second, time.Second},
	SMTPSlow:        {targetSMTP, 2 * time.Second, 6 * time.Second, slowDotLatency + time.Second},
	AdminThrottle:   {targetAdmin, 2 * time.Second, 5 * time.Second, 2 * time.Second},
}

// AllKinds lists every kind of fault, in the order reports show them.
var AllKinds = []Kind{
	KillOrders, KillDispatcher1, KillDispatcher2, KillNotifier1, KillNotifier2, KillNATS,
	TermOrders, TermDispatcher1, TermDispatcher2, TermNotifier1, TermNotifier2,
	Webhook500, Webhook503, Webhook429, WebhookHang,
	SMTPRefuse, SMTPStall, SMTPReject, SMTPSlow,
	AdminThrottle,
}

// stopsNotifier reports whether k kills or stops a notifier replica.
func stopsNotifier(k Kind) bool {
	t := kindSpecs[k].target
	return t == targetNotifier1 || t == targetNotifier2
}

// exclusive reports whether faults of kinds a and b must not overlap
// although they hit different targets. A notifier killed, or stopped past
// its grace, after it sent a message's final "." and before the relay
// answered cannot know whether the relay took the message: it is sent
// again, and the customer may get it twice. SMTP has no way to ask. That
// window lasts as long as the relay takes to answer, a millisecond from a
// healthy relay and seconds from a slow one, so a notifier is never
// stopped during a slow window or while its last slow answers are due:
// otherwise the run would count the one duplicate the design cannot
// prevent, many times over.
func exclusive(a, b Kind) bool {
	return a == SMTPSlow && stopsNotifier(b) || b == SMTPSlow && stopsNotifier(a)
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

// end is when f's target may take the next fault: after its duration and
// its recovery.
func (f Fault) end() time.Duration { return f.At + f.For + kindSpecs[f.Kind].recovery }

// conflicts reports whether f and g must not overlap: they hit the same
// target, or their kinds are exclusive.
func (f Fault) conflicts(g Fault) bool {
	return f.target() == g.target() || exclusive(f.Kind, g.Kind)
}

// faultWindow is the part of the load during which faults start and end:
// the load runs without faults for a short warm-up first, and for the last
// quarter, so that the redeliveries the last faults cause are under way
// before the load stops.
func faultWindow(d time.Duration) (from, to time.Duration) {
	return min(5*time.Second, d/10), d - d/4
}

// defaultFaults is how many faults a run of duration d plans when the
// configuration does not say: one per two seconds of the fault window,
// spread over the eight targets, and at least one of each kind.
func defaultFaults(d time.Duration, kinds int) int {
	from, to := faultWindow(d)
	return max(int((to-from)/(2*time.Second)), kinds)
}

// Plan returns the fault schedule of cfg, sorted by start. It depends only
// on the seed, the duration, the number of faults and the kinds, so the same
// settings always give the same schedule. Every kind appears at least once
// when there are at least as many faults as kinds; faults on the same
// target never overlap, each one followed by time for the target to
// recover, nor do faults of exclusive kinds (a notifier stopped while the
// relay is slow), and every fault ends inside the fault window. A fault
// that finds no room is left out, so the plan may be shorter than asked.
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
		if !placed && f.For > spec.min {
			// A crowded schedule still gets the fault, at its shortest.
			f.For = spec.min
			f.At, placed = firstFit(plan, f, from, to-f.For-spec.recovery)
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

// fits reports whether f overlaps no planned fault it conflicts with,
// counting each fault's recovery time as part of it.
func fits(plan []Fault, f Fault) bool {
	for _, g := range plan {
		if f.conflicts(g) && f.At < g.end() && g.At < f.end() {
			return false
		}
	}
	return true
}

// between returns a random duration in [0, d].
func between(rng *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(d) + 1))
}
