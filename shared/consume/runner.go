package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/backoff"
	"github.com/jethook/jethook/shared/natsx"
)

// Msg is one message handed to a handler, with its JetStream metadata.
type Msg struct {
	jetstream.Msg
	Meta *jetstream.MsgMetadata
	// AckFloor is the consumer's ack floor as the runner last read it: a
	// stream sequence below which every message was settled, 0 when not
	// known. A handler may record it, as where a consumer created again
	// should resume.
	AckFloor uint64
}

// Attempt is the message's delivery count, 1 for the first delivery.
func (m *Msg) Attempt() uint64 { return m.Meta.NumDelivered }

// Handler does the work for one message and says what becomes of it. ctx
// ends after the message timeout, or at shutdown after the grace period.
type Handler func(ctx context.Context, m *Msg) Decision

// Settled is what became of one message, for a service's metrics.
type Settled struct {
	Msg      *Msg
	Decision Decision
	// Verdict is what was carried out: the decision's, or VerdictRetry
	// when the dead-letter copy failed and the message waits for another
	// delivery instead of being terminated without its copy.
	Verdict Verdict
	// Took is how long the handler ran.
	Took time.Duration
	// Err is the failure to settle, or nil; the server redelivers the
	// message after AckWait in that case.
	Err error
}

// Config describes one consumer and how its messages are handled.
type Config struct {
	// Stream and Name identify the durable consumer.
	Stream, Name string
	// Owner is whose dead letters these are, deadletter.<Owner>.<subject>:
	// a subscription id, or the consumer's name when empty.
	Owner string
	// Noun starts each message's log line: "webhook delivered".
	Noun string
	// Concurrency is how many messages are handled at once, and so how
	// many the runner pulls at most: a message never waits in the process
	// for a worker to become free.
	Concurrency int
	Timings     Timings
	Handle      Handler
	// Provision creates or updates the consumer, and whatever it needs,
	// and returns it; Run calls it at start and whenever the consumer or
	// its stream vanished. resume is the stream sequence a vanished
	// consumer should start from again (its last known ack floor + 1), or
	// 0 when the runner knows none; EnsureConsumer applies it.
	Provision func(ctx context.Context, resume uint64) (jetstream.Consumer, error)
	JS        jetstream.JetStream
	Logger    *slog.Logger
	// Observe, when set, sees every settled message.
	Observe func(Settled)
	// Now is the clock of dead-letter stamps; nil means time.Now.
	Now func() time.Time
}

// Fixed pacing of the runner's own loop.
const (
	// pullExpiry bounds each pull request: a consumer whose leader moved
	// to another node, or that was deleted, is noticed within it.
	pullExpiry = 5 * time.Second
	// restartWait is the pause before pulling again after pulling failed.
	restartWait = time.Second
	// ackFloorEvery spaces the reads of the consumer's ack floor, which
	// say where to resume if the consumer vanishes; it is read only when
	// messages were settled since the last read.
	ackFloorEvery = time.Second
	// defaultRetryDelay replaces a retry decision without a delay.
	defaultRetryDelay = time.Second
)

// errStreamMissing stops the pull when a stream the runner settles into is
// gone, so that Provision creates it again.
var errStreamMissing = errors.New("a stream to settle into is missing")

// Runner runs one consumer. Create it with New and call Run.
type Runner struct {
	cfg Config
	log *slog.Logger

	inflight sync.WaitGroup
	ackFloor atomic.Uint64 // last known stream sequence of the consumer's ack floor
	settled  atomic.Uint64 // messages settled so far
	// reprovision is set when settling found a stream of ours missing
	// (DEADLETTER deleted, say): the pull stops and Provision runs again.
	reprovision atomic.Bool
	// stopFetch ends the pull request under way, so that reprovision
	// takes effect at once rather than when the request expires.
	stopFetch atomic.Pointer[context.CancelFunc]
}

// New checks cfg and returns its runner.
func New(cfg Config) (*Runner, error) {
	var errs []error
	if cfg.Stream == "" || cfg.Name == "" {
		errs = append(errs, errors.New("consume: stream and consumer name are required"))
	}
	if cfg.Handle == nil || cfg.Provision == nil || cfg.JS == nil || cfg.Logger == nil {
		errs = append(errs, errors.New("consume: Handle, Provision, JS and Logger are required"))
	}
	if cfg.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("consume: concurrency must be at least 1, is %d", cfg.Concurrency))
	}
	if err := cfg.Timings.Validate(0); err != nil {
		errs = append(errs, fmt.Errorf("consume: %s: %w", cfg.Name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Noun == "" {
		cfg.Noun = "message"
	}
	return &Runner{cfg: cfg, log: cfg.Logger.With("consumer", cfg.Name)}, nil
}

func (r *Runner) owner() string {
	if r.cfg.Owner != "" {
		return r.cfg.Owner
	}
	return r.cfg.Name
}

func (r *Runner) now() time.Time {
	if r.cfg.Now != nil {
		return r.cfg.Now()
	}
	return time.Now()
}

// Run provisions the consumer, retrying while NATS is away, and handles its
// messages until ctx ends. Then it stops pulling, lets in-flight handlers
// finish for the shutdown grace, cancels those still running, settles
// every message whose handler returned, and returns nil. It returns an
// error only when the NATS connection was closed under it.
func (r *Runner) Run(ctx context.Context) error {
	// Handlers run on a context of their own: the end of ctx stops the
	// pulling, while in-flight work gets the grace period.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	work = context.WithValue(work, stoppingKey{}, ctx.Done())

	// Concurrency workers handle message after message: a goroutine per
	// message grew a fresh stack for each, a few percent of the
	// process's CPU. slots counts the workers free for a message; pull
	// fetches no more than that.
	slots := make(chan struct{}, r.cfg.Concurrency)
	jobs := make(chan jetstream.Msg)
	defer close(jobs)
	for range r.cfg.Concurrency {
		slots <- struct{}{}
		go func() {
			for msg := range jobs {
				r.handle(work, msg)
				r.inflight.Done()
				release(slots, 1)
			}
		}()
	}
	defer r.finish(cancelWork)
	var resume uint64
	for {
		var cons jetstream.Consumer
		err := natsx.Retry(ctx, r.log, "provision consumer "+r.cfg.Name, func(ctx context.Context) error {
			var err error
			cons, err = r.cfg.Provision(ctx, resume)
			return err
		})
		if err != nil {
			return nil // ctx ended before NATS was ready.
		}
		if info := cons.CachedInfo(); info != nil {
			r.ackFloor.Store(info.AckFloor.Stream)
		}
		r.log.Info("consuming", "stream", r.cfg.Stream, "concurrency", r.cfg.Concurrency)

		err = r.pull(ctx, cons, slots, jobs)
		switch {
		case ctx.Err() != nil:
			return nil
		case r.cfg.JS.Conn().IsClosed():
			return fmt.Errorf("consumer %s stopped: %w", r.cfg.Name, err)
		}
		resume = 0
		if r.vanished(ctx) {
			if floor := r.ackFloor.Load(); floor > 0 {
				resume = floor + 1
			}
			r.log.Warn("consumer or stream vanished, provisioning it again", "error", err.Error(), "resume_seq", resume)
		} else {
			r.log.Warn("pulling stopped, starting again", "error", err.Error(), "retry_in", restartWait.String())
		}
		if !sleep(ctx, restartWait) {
			return nil
		}
	}
}

type stoppingKey struct{}

// Stopping returns a channel that is closed once the runner handling the
// message of ctx has begun to shut down. Work under way gets the shutdown
// grace; work that has not begun (an email still waiting for a free
// connection) should give up instead, and be retried, so that it does not
// start what the end of the grace may cut short. Outside a runner it
// returns nil, which is never closed.
func Stopping(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(stoppingKey{}).(<-chan struct{})
	return ch
}

// finish waits for the in-flight handlers, for at most the shutdown grace,
// then cancels those still running and waits for them to settle.
func (r *Runner) finish(cancelWork context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		r.inflight.Wait()
		close(done)
	}()
	grace := time.NewTimer(r.cfg.Timings.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
		return
	case <-grace.C:
	}
	r.log.Warn("in-flight work still running at shutdown, cancelling it", "grace", r.cfg.Timings.ShutdownGrace.String())
	cancelWork()
	<-done
}

// pull fetches as many messages as there are free workers and hands each
// to one through jobs, until ctx ends or a fetch fails.
func (r *Runner) pull(ctx context.Context, cons jetstream.Consumer, slots chan struct{}, jobs chan<- jetstream.Msg) error {
	floorCtx, stopFloor := context.WithCancel(ctx)
	defer stopFloor()
	go r.followAckFloor(floorCtx, cons)
	for {
		n, ok := acquire(ctx, slots)
		if !ok {
			return nil
		}
		fetchCtx, cancel := context.WithTimeout(ctx, pullExpiry)
		r.stopFetch.Store(&cancel)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fetchCtx))
		if err != nil {
			cancel()
			release(slots, n)
			return fmt.Errorf("pull: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			r.inflight.Add(1)
			jobs <- msg
		}
		cancel()
		release(slots, n-got)
		if err := batch.Error(); err != nil && !expired(err) {
			return fmt.Errorf("pull: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if r.reprovision.Swap(false) {
			return errStreamMissing
		}
	}
}

// followAckFloor reads the consumer's ack floor every ackFloorEvery while
// messages are being settled, until ctx ends.
func (r *Runner) followAckFloor(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(ackFloorEvery)
	defer t.Stop()
	readAt := r.settled.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if settled := r.settled.Load(); settled != readAt {
			readAt = settled
			r.readAckFloor(ctx, cons)
		}
	}
}

// acquire waits for one free worker and takes every other free one too.
func acquire(ctx context.Context, slots chan struct{}) (int, bool) {
	select {
	case <-ctx.Done():
		return 0, false
	case <-slots:
	}
	n := 1
	for n < cap(slots) {
		select {
		case <-slots:
			n++
		default:
			return n, true
		}
	}
	return n, true
}

func release(slots chan struct{}, n int) {
	for range n {
		slots <- struct{}{}
	}
}

// expired reports whether a fetch ended only because its time was up.
func expired(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)
}

// readAckFloor remembers where the consumer stands, to resume from there
// should it vanish.
func (r *Runner) readAckFloor(ctx context.Context, cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timings.SettleTimeout)
	defer cancel()
	if info, err := cons.Info(ctx); err == nil {
		r.ackFloor.Store(info.AckFloor.Stream)
		r.log.Debug("ack floor read", "ack_floor", info.AckFloor.Stream)
	}
}

// vanished reports whether the consumer or its stream is gone, as opposed
// to NATS being unreachable.
func (r *Runner) vanished(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timings.SettleTimeout)
	defer cancel()
	_, err := r.cfg.JS.Consumer(ctx, r.cfg.Stream, r.cfg.Name)
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// handle runs the handler for one message and settles it. The message is
// marked in progress at once, which restarts its AckWait, and again every
// heartbeat until it is settled, so that the server never gives a live
// worker's message to another worker.
func (r *Runner) handle(work context.Context, raw jetstream.Msg) {
	meta, err := raw.Metadata()
	if err != nil {
		// A pull consumer only hands out JetStream messages; the server
		// redelivers this one after AckWait.
		r.log.Error("message without JetStream metadata", "subject", raw.Subject(), "error", err)
		return
	}
	m := &Msg{Msg: raw, Meta: meta, AckFloor: r.ackFloor.Load()}
	_ = m.InProgress()
	stop := r.heartbeat(m)
	defer stop()

	ctx, span := r.startSpan(work, m)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timings.MessageTimeout)
	start := time.Now()
	d := r.call(ctx, m)
	took := time.Since(start)
	cancel()

	verdict, err := r.settle(m, &d, stop)
	endSpan(span, d, verdict, err)
	r.settled.Add(1)
	r.report(Settled{Msg: m, Decision: d, Verdict: verdict, Took: took, Err: err})
}

// call runs the handler, turning a panic into a retry: a bug in one
// message's handling must not stop every other message of the process.
func (r *Runner) call(ctx context.Context, m *Msg) (d Decision) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("handler panicked", "subject", m.Subject(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			d = Retry("panicked", r.cfg.Timings.AckWait, fmt.Errorf("handler panicked: %v", p))
		}
	}()
	return r.cfg.Handle(ctx, m)
}

// heartbeat marks m in progress every Heartbeat until stop is called;
// none goes out once stop has returned. A timer, not a goroutine, waits
// for the beat: most messages are settled before their first.
func (r *Runner) heartbeat(m *Msg) (stop func()) {
	var mu sync.Mutex
	stopped := false
	every := r.cfg.Timings.Heartbeat
	var t *time.Timer
	// The beat takes mu first, so it finds t set.
	mu.Lock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = m.InProgress()
		t.Reset(every)
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// settle carries out d and returns what was done. A dead letter whose copy
// failed is never terminated: it is retried instead, and its next delivery
// decides again. The heartbeat is stopped (stopBeats) before the message is
// settled and not before: a mark in progress that reached the server after
// a NakWithDelay would restart the message's AckWait and bring the retry
// back sooner than its delay, while a slow dead-letter copy still needs
// the beats.
func (r *Runner) settle(m *Msg, d *Decision, stopBeats func()) (Verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timings.SettleTimeout)
	defer cancel()
	switch d.Verdict {
	case VerdictAck:
		stopBeats()
		if d.Confirm {
			return VerdictAck, m.DoubleAck(ctx)
		}
		return VerdictAck, m.Ack()
	case VerdictRetry:
		if d.Delay <= 0 {
			d.Delay = defaultRetryDelay
		}
		stopBeats()
		return VerdictRetry, m.NakWithDelay(d.Delay)
	default:
		err := r.deadLetter(ctx, m, *d)
		stopBeats()
		if err != nil {
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
				r.reprovision.Store(true)
				if stop := r.stopFetch.Load(); stop != nil {
					(*stop)()
				}
			}
			delay := backoff.Exponential(time.Second, time.Minute, m.Attempt())
			return VerdictRetry, errors.Join(err, m.NakWithDelay(delay))
		}
		return VerdictDeadLetter, m.TermWithReason(d.Reason)
	}
}

// report writes the message's one log line and tells Observe.
func (r *Runner) report(s Settled) {
	d := s.Decision
	attrs := make([]slog.Attr, 0, len(d.Attrs)+7)
	attrs = append(attrs, d.Attrs...)
	attrs = append(attrs,
		slog.Uint64("attempt", s.Msg.Attempt()),
		slog.String("outcome", d.Outcome),
		slog.Int64("duration_ms", s.Took.Milliseconds()))
	level, msg := slog.LevelInfo, r.cfg.Noun+" "+d.Outcome
	switch s.Verdict {
	case VerdictRetry:
		level, msg = slog.LevelWarn, r.cfg.Noun+" failed, will retry"
		attrs = append(attrs, slog.String("retry_in", d.Delay.String()))
	case VerdictDeadLetter:
		level, msg = slog.LevelError, r.cfg.Noun+" dead-lettered"
		attrs = append(attrs, slog.String("reason", d.Reason))
	}
	if d.Message != "" {
		msg = d.Message
	}
	if s.Verdict != d.Verdict {
		msg = r.cfg.Noun + " dead-letter copy failed, will retry"
	}
	if d.Err != nil {
		// An ack with an error is work done with something left undone
		// (an email sent but not recorded), worth a warning.
		level = max(level, slog.LevelWarn)
		attrs = append(attrs, slog.String("error", d.Err.Error()))
	}
	if s.Err != nil {
		level = max(level, slog.LevelWarn)
		attrs = append(attrs, slog.String("settle_error", s.Err.Error()))
	}
	r.log.LogAttrs(context.Background(), level, msg, attrs...)
	if r.cfg.Observe != nil {
		r.cfg.Observe(s)
	}
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
