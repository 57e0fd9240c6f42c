package consume_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

const (
	testStream   = "WORK"
	testConsumer = "worker"
)

// fastTimings keep the tests quick: AckWait 1 s, a heartbeat every 250 ms.
func fastTimings() consume.Timings {
	return consume.Timings{
		AckWait:        time.Second,
		Heartbeat:      250 * time.Millisecond,
		MessageTimeout: 5 * time.Second,
		SettleTimeout:  500 * time.Millisecond,
		ShutdownGrace:  2 * time.Second,
	}
}

// fixture is a runner on a fresh embedded nats-server, with a WORK stream
// on work.> and the DEADLETTER stream.
type fixture struct {
	t    *testing.T
	srv  *natstest.Server
	js   jetstream.JetStream
	logs *testkit.SyncBuffer
	// noDeadletter keeps provision from creating DEADLETTER.
	noDeadletter bool

	cfg    consume.Config
	cancel context.CancelFunc
	done   chan error
}

func newFixture(t *testing.T, concurrency int, handle consume.Handler) *fixture {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	f := &fixture{t: t, srv: srv, js: js, logs: &testkit.SyncBuffer{}}
	f.cfg = consume.Config{
		Stream: testStream, Name: testConsumer, Noun: "job",
		Concurrency: concurrency,
		Timings:     fastTimings(),
		Handle:      handle,
		JS:          js,
		Logger:      slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Provision:   f.provision,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.provision(ctx, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) provision(ctx context.Context, resume uint64) (jetstream.Consumer, error) {
	streams := []jetstream.StreamConfig{{Name: testStream, Subjects: []string{"work.>"}, Storage: jetstream.FileStorage}}
	if !f.noDeadletter {
		streams = append(streams, natsx.DeadletterStream(1))
	}
	if err := natsx.Provision(ctx, f.js, streams, nil); err != nil {
		return nil, err
	}
	return consume.EnsureConsumer(ctx, f.js, testStream, jetstream.ConsumerConfig{
		Durable:       testConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       f.cfg.Timings.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	}, resume)
}

func (f *fixture) start() {
	f.t.Helper()
	r, err := consume.New(f.cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- r.Run(ctx) }()
	f.t.Cleanup(func() { f.stop() })
}

// stop ends Run and returns how long it took to return.
func (f *fixture) stop() time.Duration {
	f.t.Helper()
	if f.cancel == nil {
		return 0
	}
	began := time.Now()
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Errorf("Run = %v", err)
		}
	case <-time.After(15 * time.Second):
		f.t.Fatal("Run did not return within 15 s of the end of its context")
	}
	return time.Since(began)
}

func (f *fixture) publish(n int) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range n {
		if _, err := f.js.Publish(ctx, "work.job", []byte(strconv.Itoa(i))); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) info() *jetstream.ConsumerInfo {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := f.js.Consumer(ctx, testStream, testConsumer)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return info
}

// idle reports whether the consumer has nothing left. The server counts
// a message just published as pending a moment later, so a test that has
// just published waits for its handler to see the message first.
func (f *fixture) idle() bool {
	info := f.info()
	return info.NumPending == 0 && info.NumAckPending == 0
}

func (f *fixture) deadLetters() []*jetstream.RawStreamMsg {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := f.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		return nil
	}
	info, err := s.Info(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		if m, err := s.GetMsg(ctx, seq); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// counter counts the deliveries of each message body.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(m *consume.Msg) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[string(m.Data())]++
	return c.n[string(m.Data())]
}

func (c *counter) get(body string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[body]
}

func TestDecisionsAreCarriedOut(t *testing.T) {
	var seen counter
	f := newFixture(t, 4, func(_ context.Context, m *consume.Msg) consume.Decision {
		n := seen.add(m)
		switch string(m.Data()) {
		case "0":
			return consume.Ack("done")
		case "1":
			if n == 1 {
				return consume.Retry("failed", 200*time.Millisecond, errors.New("not yet"))
			}
			return consume.AckConfirmed("done")
		default:
			return consume.DeadLetter("refused", "permanent failure", errors.New("no\nway")).
				WithHeader(consume.HeaderLastStatus, "550")
		}
	})
	f.start()
	f.publish(3)
	testkit.Eventually(t, 10*time.Second, "every message settled", func() bool {
		return f.idle() && len(f.deadLetters()) == 1
	})
	if seen.get("0") != 1 || seen.get("1") != 2 || seen.get("2") != 1 {
		t.Fatalf("deliveries: ack %d, retry %d, dead letter %d; want 1, 2, 1", seen.get("0"), seen.get("1"), seen.get("2"))
	}
	dl := f.deadLetters()[0]
	want := map[string]string{
		consume.HeaderOriginalSubject:  "work.job",
		consume.HeaderOriginalStream:   testStream,
		consume.HeaderOriginalSequence: "3",
		consume.HeaderSubscription:     testConsumer,
		consume.HeaderAttempts:         "1",
		consume.HeaderReason:           "permanent failure",
		consume.HeaderLastError:        "no way",
		consume.HeaderLastStatus:       "550",
	}
	for k, v := range want {
		if got := dl.Header.Get(k); got != v {
			t.Errorf("dead letter %s = %q, want %q", k, got, v)
		}
	}
	if dl.Subject != "deadletter.worker.work.job" || string(dl.Data) != "2" {
		t.Errorf("dead letter %s %q, want deadletter.worker.work.job with the original body", dl.Subject, dl.Data)
	}
	// Terminated, not waiting for another delivery: nothing is pending
	// and the message is not redelivered.
	if info := f.info(); info.NumRedelivered != 0 {
		t.Errorf("%d messages still to be redelivered", info.NumRedelivered)
	}
}

// TestPullsNoMoreThanItsWorkersTake: while every worker is busy, no
// further message is delivered to the process, so none can wait in it past
// AckWait and be delivered to another worker meanwhile.
func TestPullsNoMoreThanItsWorkersTake(t *testing.T) {
	release := make(chan struct{})
	var inFlight, most atomic.Int32
	f := newFixture(t, 3, func(ctx context.Context, _ *consume.Msg) consume.Decision {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return consume.Ack("done")
	})
	f.start()
	f.publish(10)
	testkit.Eventually(t, 5*time.Second, "three workers busy", func() bool { return inFlight.Load() == 3 })
	// Longer than AckWait: a buffered message would have been redelivered.
	time.Sleep(1500 * time.Millisecond)
	if info := f.info(); info.NumAckPending != 3 || info.NumRedelivered != 0 {
		t.Fatalf("with 3 busy workers: %d delivered, %d redelivered; want 3 and 0", info.NumAckPending, info.NumRedelivered)
	}
	close(release)
	testkit.Eventually(t, 10*time.Second, "all ten handled", f.idle)
	if most.Load() > 3 {
		t.Fatalf("%d handlers ran at once, concurrency is 3", most.Load())
	}
}

// TestHeartbeatKeepsSlowWork: work that runs for three AckWaits is never
// delivered twice, because the runner marks it in progress meanwhile.
func TestHeartbeatKeepsSlowWork(t *testing.T) {
	var seen counter
	f := newFixture(t, 1, func(ctx context.Context, m *consume.Msg) consume.Decision {
		seen.add(m)
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
		}
		return consume.Ack("done")
	})
	f.start()
	f.publish(1)
	testkit.Eventually(t, 10*time.Second, "the slow job acked", func() bool { return seen.get("0") > 0 && f.idle() })
	if n := seen.get("0"); n != 1 {
		t.Fatalf("slow job delivered %d times, want 1", n)
	}
}

// TestNoHeartbeatAfterTheRetry: a retry's delay is kept, however close a
// heartbeat came to the settling. A mark in progress that reached the
// server after the NakWithDelay would reset the message's clock to
// AckWait, and the retry would come sooner than the receiver asked
// (Retry-After is a floor). Heartbeats every 100 µs make that race likely
// in a few hundred messages if nothing prevents it.
func TestNoHeartbeatAfterTheRetry(t *testing.T) {
	const jobs, delay = 300, 3 * time.Second
	var mu sync.Mutex
	retried := map[string]time.Time{}
	early := map[string]time.Duration{}
	var again atomic.Int32
	f := newFixture(t, 16, func(_ context.Context, m *consume.Msg) consume.Decision {
		mu.Lock()
		defer mu.Unlock()
		body := string(m.Data())
		if at, ok := retried[body]; ok {
			if waited := time.Since(at); waited < delay-100*time.Millisecond {
				early[body] = waited
			}
			again.Add(1)
			return consume.Ack("done")
		}
		mu.Unlock()
		// Work long enough for heartbeats to run beside it.
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		retried[body] = time.Now()
		return consume.Retry("later", delay, errors.New("try again later"))
	})
	f.cfg.Timings.AckWait, f.cfg.Timings.Heartbeat = time.Second, 100*time.Microsecond
	f.publish(jobs)
	f.start()
	testkit.Eventually(t, 20*time.Second, "every job retried once", func() bool { return again.Load() >= jobs })
	mu.Lock()
	defer mu.Unlock()
	if len(early) > 0 {
		t.Fatalf("%d of %d retries came sooner than their %s delay, e.g. %v", len(early), jobs, delay, early)
	}
}

func TestMessageTimeoutEndsTheHandler(t *testing.T) {
	var took atomic.Int64
	f := newFixture(t, 1, func(ctx context.Context, _ *consume.Msg) consume.Decision {
		start := time.Now()
		<-ctx.Done()
		took.Store(int64(time.Since(start)))
		return consume.DeadLetter("timed_out", "timeout", ctx.Err())
	})
	f.cfg.Timings.MessageTimeout = 300 * time.Millisecond
	f.start()
	f.publish(1)
	testkit.Eventually(t, 5*time.Second, "the timed-out job dead-lettered", func() bool { return len(f.deadLetters()) == 1 })
	if d := time.Duration(took.Load()); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the handler's context ended after %s, want about the 300ms timeout", d)
	}
}

func TestPanicIsRetriedNotFatal(t *testing.T) {
	var seen counter
	f := newFixture(t, 2, func(_ context.Context, m *consume.Msg) consume.Decision {
		if seen.add(m) == 1 {
			panic("boom")
		}
		return consume.Ack("done")
	})
	f.start()
	f.publish(1)
	testkit.Eventually(t, 10*time.Second, "the job acked on its second delivery", func() bool {
		return seen.get("0") == 2 && f.idle()
	})
}

// TestResumesWhereAVanishedConsumerStood: a consumer deleted under a
// running runner comes back on its own, from its ack floor, so that the
// messages it had done are not delivered again.
func TestResumesWhereAVanishedConsumerStood(t *testing.T) {
	var seen counter
	f := newFixture(t, 2, func(_ context.Context, m *consume.Msg) consume.Decision {
		seen.add(m)
		return consume.Ack("done")
	})
	f.start()
	f.publish(5)
	testkit.Eventually(t, 5*time.Second, "the first five handled", func() bool {
		for i := range 5 {
			if seen.get(strconv.Itoa(i)) == 0 {
				return false
			}
		}
		return f.idle()
	})
	// The runner reads the ack floor after it settled messages; wait for
	// the read that knows all five.
	testkit.Eventually(t, 10*time.Second, "the ack floor read", func() bool {
		return strings.Contains(f.logs.String(), `"ack_floor":5`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.js.DeleteConsumer(ctx, testStream, testConsumer); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "the consumer provisioned again", func() bool {
		_, err := f.js.Consumer(ctx, testStream, testConsumer)
		return err == nil
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := f.js.Publish(ctx2, "work.job", []byte("new")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the new message handled", func() bool { return seen.get("new") == 1 })
	for i := range 5 {
		if n := seen.get(strconv.Itoa(i)); n != 1 {
			t.Errorf("message %d handled %d times: the recreated consumer replayed old messages", i, n)
		}
	}
}

// TestDeadLetterNeverTerminatesWithoutItsCopy: while DEADLETTER cannot take
// the copy, the message is kept and retried; once it can, the message is
// dead-lettered exactly once.
func TestDeadLetterNeverTerminatesWithoutItsCopy(t *testing.T) {
	f := newFixture(t, 1, func(context.Context, *consume.Msg) consume.Decision {
		return consume.DeadLetter("refused", "permanent failure", errors.New("bad"))
	})
	f.noDeadletter = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.js.DeleteStream(ctx, natsx.StreamDeadletter); err != nil {
		t.Fatal(err)
	}
	f.start()
	f.publish(1)
	testkit.Eventually(t, 10*time.Second, "a failed dead-letter copy", func() bool {
		return strings.Contains(f.logs.String(), "dead-letter copy failed, will retry")
	})
	if info := f.info(); info.NumAckPending != 1 {
		t.Fatalf("after the failed copy %d messages pending acknowledgement, want the one kept", info.NumAckPending)
	}
	if _, err := f.js.CreateStream(ctx, natsx.DeadletterStream(1)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "the message dead-lettered once DEADLETTER is back", func() bool {
		return len(f.deadLetters()) == 1 && f.idle()
	})
}

// TestShutdownGrace: work that finishes within the grace is settled; work
// that does not is cancelled at the end of the grace and settled too.
func TestShutdownGrace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		work     time.Duration
		want     string
		maxAfter time.Duration
	}{
		{"finishes within the grace", 500 * time.Millisecond, "done", 2 * time.Second},
		{"cancelled after the grace", time.Minute, "cancelled", 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			var outcome atomic.Value
			f := newFixture(t, 1, func(ctx context.Context, _ *consume.Msg) consume.Decision {
				started <- struct{}{}
				select {
				case <-time.After(tc.work):
					outcome.Store("done")
					return consume.Ack("done")
				case <-ctx.Done():
					outcome.Store("cancelled")
					return consume.Retry("interrupted", 100*time.Millisecond, ctx.Err())
				}
			})
			f.cfg.Timings.ShutdownGrace = time.Second
			f.start()
			f.publish(1)
			<-started
			if took := f.stop(); took > tc.maxAfter {
				t.Fatalf("Run returned %s after its context ended, want at most %s", took, tc.maxAfter)
			}
			if got := outcome.Load(); got != tc.want {
				t.Fatalf("in-flight work %v, want %s", got, tc.want)
			}
		})
	}
}

func TestTimingsValidate(t *testing.T) {
	ok := fastTimings()
	for _, tc := range []struct {
		name   string
		change func(*consume.Timings)
		budget time.Duration
		bad    bool
	}{
		{"consistent", func(*consume.Timings) {}, 10 * time.Second, false},
		{"no budget given", func(*consume.Timings) {}, 0, false},
		{"zero heartbeat", func(t *consume.Timings) { t.Heartbeat = 0 }, 0, true},
		{"heartbeat too close to AckWait", func(t *consume.Timings) { t.Heartbeat = 500 * time.Millisecond }, 0, true},
		{"settling slower than AckWait", func(t *consume.Timings) { t.SettleTimeout = time.Second }, 0, true},
		{"grace beyond the budget", func(t *consume.Timings) { t.ShutdownGrace = 10 * time.Second }, 10 * time.Second, true},
		{"negative timeout", func(t *consume.Timings) { t.MessageTimeout = -time.Second }, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := ok
			tc.change(&tm)
			if err := tm.Validate(tc.budget); (err != nil) != tc.bad {
				t.Fatalf("Validate = %v, want error %v", err, tc.bad)
			}
		})
	}
}

func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	_, err := consume.New(consume.Config{Stream: "S", Concurrency: 0})
	if err == nil {
		t.Fatal("New accepted a config without name, handler, provision and concurrency")
	}
	for _, want := range []string{"name", "Handle", "concurrency"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func ExampleDecision() {
	d := consume.Retry("failed", 2*time.Second, errors.New("receiver answered 503"))
	fmt.Println(d.Verdict, d.Delay, d.Err)
	// Output: retry 2s receiver answered 503
}
