package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Config says how long and how hard a run is, and which faults it injects.
type Config struct {
	// Seed decides the fault schedule; the same seed and settings give the
	// same schedule.
	Seed int64
	// Duration is how long the load runs; faults happen inside it.
	Duration time.Duration
	// Rate is how many orders per second the load creates.
	Rate float64
	// Faults is how many faults to plan; zero means one per two seconds
	// of the fault window and at least one of each kind.
	Faults int
	// Kinds are the kinds of fault to draw from; nil means AllKinds.
	Kinds []Kind
	// DrainTimeout bounds the wait, once the load has stopped, for every
	// acknowledged order's email and for the queues to empty; zero means
	// 3 minutes, which outlasts the longest redelivery a crash can cause.
	DrainTimeout time.Duration
	// BinDir holds prebuilt orders, dispatcher, notifier and nats-server
	// binaries; empty means build them from the go.work workspace.
	BinDir string
	// KeepDir keeps the work directory (logs, JetStream store) after a run
	// that passed; a run that failed always keeps it.
	KeepDir bool
}

// DefaultDuration and DefaultRate are the settings of a run that does not
// name its own; MaxFaults bounds the faults a run may ask for.
const (
	DefaultDuration = 2 * time.Minute
	DefaultRate     = 5.0
	MaxFaults       = 10_000
)

func (c Config) withDefaults() Config {
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Rate <= 0 {
		c.Rate = DefaultRate
	}
	if len(c.Kinds) == 0 {
		c.Kinds = AllKinds
	}
	if c.Faults <= 0 {
		c.Faults = defaultFaults(c.Duration, len(c.Kinds))
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 3 * time.Minute
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Duration < 10*time.Second {
		errs = append(errs, fmt.Errorf("duration %s is too short for faults and recovery: want at least 10s", c.Duration))
	}
	if c.Rate > 200 {
		errs = append(errs, fmt.Errorf("rate %g orders/s is more than a chaos run needs: want at most 200", c.Rate))
	}
	if c.Faults > MaxFaults {
		errs = append(errs, fmt.Errorf("%d faults are more than a run can place: want at most %d", c.Faults, MaxFaults))
	}
	for _, k := range c.Kinds {
		if _, ok := kindSpecs[k]; !ok {
			errs = append(errs, fmt.Errorf("unknown fault kind %q", k))
		}
	}
	return errors.Join(errs...)
}

// DeadLetter is one message of the DEADLETTER stream, with its reasons.
type DeadLetter struct {
	Sequence uint64
	Subject  string
	// Owner is whose dead letter it is (Jethook-Subscription): a
	// subscription, or the email worker's consumer, notifier-email.
	Owner      string
	EventID    string
	Reason     string
	Attempts   string
	LastStatus string
	LastError  string
	// SMTPCode is the relay's reply code of an email dead letter.
	SMTPCode string
	// OrderID and CustomerEmail come from the event in the body.
	OrderID, CustomerEmail string
}

func (d DeadLetter) String() string {
	return fmt.Sprintf("seq=%d subject=%s owner=%s event_id=%s reason=%q attempts=%s last_status=%s smtp_code=%s last_error=%q",
		d.Sequence, d.Subject, d.Owner, d.EventID, d.Reason, d.Attempts, d.LastStatus, d.SMTPCode, d.LastError)
}

// Result is what a run observed.
type Result struct {
	Seed int64
	// Planned is the number of faults in the schedule, Faults the number
	// injected, ByKind the injected ones by kind.
	Planned, Faults int
	ByKind          map[Kind]int
	// Orders is the number of orders the load created, Acked those
	// answered 201.
	Orders, Acked int
	// Emails is every email the mail server accepted.
	Emails int
	// Lost counts acknowledged orders without an email and without a
	// dead letter that explains it; Duplicated counts orders with more
	// than one email.
	Lost, Duplicated int
	// Refused counts acknowledged orders without an email whose email the
	// relay refused for good during a reject window, each with its dead
	// letter; RecipientsRefused counts the relay's 550 answers.
	Refused, RecipientsRefused int
	// RefusedThenSent counts orders with a refusal dead letter that were
	// emailed all the same: their webhook came again after the window
	// (a dispatcher that died before its ack, a receiver that hung), found
	// no email sent and sent it.
	RefusedThenSent int
	// Unexpected counts order ids with an email but without a 201; Unknown
	// counts those the orders service does not know either, or emails
	// that name no order.
	Unexpected, Unknown int
	// Unresolved counts orders never answered 201, even after the load
	// stopped and every process ran again; Rejected counts orders answered
	// with a 4xx, which no retry changes.
	Unresolved, Rejected int
	// Backlog describes what was still pending in JetStream when the drain
	// ended; empty means nothing.
	Backlog string
	// DeadLetters lists the DEADLETTER stream after the drain, and
	// UnexplainedDeadLetters those that are not the refusal of an email
	// the relay refused during a reject window.
	DeadLetters, UnexplainedDeadLetters []DeadLetter
	// RetryAfterAnswers counts the proxy's 429 and 503 answers with
	// Retry-After; RetryAfterEarly names the webhooks that came back
	// sooner than they were asked to.
	RetryAfterAnswers int
	RetryAfterEarly   []string
	// Forwarded counts the webhooks the proxy handed to each notifier.
	Forwarded []int64
	// OvercountedAttempts names the events whose attempt log counts more
	// attempts than the webhooks the proxy got for them and the attempts
	// recorded without an answer: a held delivery
	// (breaker open, rate limit) counted as an attempt, which would spend
	// MAX_DELIVER without a request. AttemptLogError says why the log
	// could not be read, when it could not.
	OvercountedAttempts []string
	AttemptLogError     string
	// Crashes lists processes that exited without being told to.
	Crashes []string
	// Notes are observations that are not failures by themselves, such as
	// a slow graceful stop.
	Notes []string
	// MaxLatency and MedianLatency are over acknowledged orders, from the
	// 201 to the first email.
	MaxLatency, MedianLatency time.Duration
	// Drain is how long the pipeline took to drain after the load stopped.
	Drain time.Duration
	// LostOrders and DuplicatedOrders name the order ids behind the counts.
	LostOrders, DuplicatedOrders []string
}

// Line is the one-line summary the command prints last.
func (r Result) Line() string {
	return fmt.Sprintf("chaos: seed=%d acked=%d emails=%d lost=%d duplicated=%d refused=%d faults=%d dead_letters=%d",
		r.Seed, r.Acked, r.Emails, r.Lost, r.Duplicated, r.Refused, r.Faults, len(r.DeadLetters))
}

// Failures lists every way the run broke the system's guarantees or could
// not do what it planned; empty means it passed.
func (r Result) Failures() []string {
	var f []string
	add := func(cond bool, format string, args ...any) {
		if cond {
			f = append(f, fmt.Sprintf(format, args...))
		}
	}
	add(r.Lost > 0, "%d acknowledged orders have no email: %s", r.Lost, ids(r.LostOrders))
	add(r.Duplicated > 0, "%d orders have more than one email: %s", r.Duplicated, ids(r.DuplicatedOrders))
	add(r.Faults < r.Planned, "only %d of %d planned faults were injected", r.Faults, r.Planned)
	add(r.Unknown > 0, "%d emails name an order the orders service does not know", r.Unknown)
	add(r.Unresolved > 0, "%d orders never got a 201, although every process ran again", r.Unresolved)
	add(r.Rejected > 0, "%d orders were answered with a 4xx", r.Rejected)
	add(r.Backlog != "", "still pending after the drain: %s", r.Backlog)
	add(len(r.UnexplainedDeadLetters) > 0, "%d dead letters that no refusal by the relay explains, although the retry settings leave room for every fault: %s",
		len(r.UnexplainedDeadLetters), deadLetterIDs(r.UnexplainedDeadLetters))
	add(len(r.RetryAfterEarly) > 0, "%d webhooks came back sooner than the Retry-After they were given: %s",
		len(r.RetryAfterEarly), ids(r.RetryAfterEarly))
	add(len(r.OvercountedAttempts) > 0, "%d events have more attempts in the attempt log than webhooks the receiver got: %s",
		len(r.OvercountedAttempts), ids(r.OvercountedAttempts))
	add(r.AttemptLogError != "", "the attempt log could not be read: %s", r.AttemptLogError)
	for _, c := range r.Crashes {
		f = append(f, "crash: "+c)
	}
	return f
}

func deadLetterIDs(dls []DeadLetter) string {
	var s []string
	for _, d := range dls {
		s = append(s, fmt.Sprintf("%s (%s)", d.EventID, d.Subject))
	}
	return ids(s)
}

func ids(s []string) string {
	const show = 10
	if len(s) > show {
		return strings.Join(s[:show], " ") + fmt.Sprintf(" and %d more", len(s)-show)
	}
	return strings.Join(s, " ")
}

// Run builds and starts the system, runs the load and the fault schedule of
// cfg, drains the pipeline and checks it, writing its progress to out. The
// returned Result holds what was observed so far even when err is not nil;
// err says why the run could not be completed, and Result.Failures what it
// found wrong. Every process Run starts is stopped before it returns.
func Run(ctx context.Context, cfg Config, out io.Writer) (Result, error) {
	cfg = cfg.withDefaults()
	res := Result{Seed: cfg.Seed, ByKind: map[Kind]int{}}
	if err := cfg.validate(); err != nil {
		return res, err
	}
	plan := Plan(cfg)
	res.Planned = len(plan)
	lg := &logger{out: out}
	lg.printf("seed=%d duration=%s rate=%g/s faults=%d drain_timeout=%s", cfg.Seed, cfg.Duration, cfg.Rate, len(plan), cfg.DrainTimeout)
	for i, f := range plan {
		lg.printf("plan %2d/%d %s", i+1, len(plan), f)
	}

	dir, err := os.MkdirTemp("", "jethook-chaos-")
	if err != nil {
		return res, err
	}
	h := &harness{cfg: cfg, dir: dir, log: lg, res: &res, refused: map[string]bool{}}
	err = h.run(ctx, plan)
	if err == nil && len(res.Failures()) == 0 && !cfg.KeepDir {
		_ = os.RemoveAll(dir)
	} else {
		lg.printf("logs and JetStream store kept in %s", dir)
	}
	return res, err
}

// sortedKinds returns the kinds of m in the order of AllKinds.
func sortedKinds(m map[Kind]int) []Kind {
	var out []Kind
	for _, k := range AllKinds {
		if m[k] > 0 {
			out = append(out, k)
		}
	}
	return out
}
