package jobs_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/jobs"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/dispatcher/internal/redeliver"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/tracing"
)

type env struct {
	*platformtest.Env
	reg  *registry.Registry
	logs *testkit.SyncBuffer
}

func start(t testing.TB) env {
	t.Helper()
	e := env{Env: platformtest.Start(t), logs: &testkit.SyncBuffer{}}
	reg, err := registry.New(e.JS, [32]byte{1}, 1, slog.New(slog.DiscardHandler), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Provision(platformtest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- logs ----\n%s", e.logs.String())
		}
	})
	return e
}

func (e env) subscribe(t testing.TB, types ...string) subscription.Subscription {
	t.Helper()
	url := "https://hooks.example.com/in"
	entry, _, err := e.reg.Create(platformtest.Ctx(t), subscription.Fields{URL: &url, EventTypes: &types})
	if err != nil {
		t.Fatal(err)
	}
	return entry.Subscription
}

// manager returns a Manager on its own connection, running until the
// returned stop is called (or the test ends).
func (e env) manager(t testing.TB, js jetstream.JetStream, opts jobs.Options) (*jobs.Manager, func()) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := jobs.New(js, e.reg, logger, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return m, stop
}

// ownConn is a second client of the test's server, to run a replica on
// that the test can cut off as a crash would.
func (e env) ownConn(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.Connect(t, e.Server.URL())
}

func (e env) status(t testing.TB, m *jobs.Manager, id string) jobs.Status {
	t.Helper()
	s, err := m.Status(platformtest.Ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e env) waitDone(t testing.TB, m *jobs.Manager, id string) jobs.Status {
	t.Helper()
	var s jobs.Status
	testkit.Eventually(t, 30*time.Second, "the job to be done", func() bool {
		s = e.status(t, m, id)
		return s.State != jobs.StateRunning
	})
	if s.State != jobs.StateDone {
		t.Fatalf("job %+v", s)
	}
	return s
}

// TestRecoverEnqueuesTheRangeOnce: a job enqueues every event of the
// range that matches the subscription's types, once, in order, as the
// redelivery contract says, with total counted before it runs.
func TestRecoverEnqueuesTheRangeOnce(t *testing.T) {
	e := start(t)
	sub := e.subscribe(t, "order.paid")
	e.Publish(t, platformtest.Events(t, 3)...) // before the range
	since := time.Now()
	in := platformtest.Events(t, 7)
	seqs := e.Publish(t, in...)
	// Another type in the range: not the subscription's.
	if _, err := e.JS.Publish(platformtest.Ctx(t), "orders.refunded.x", []byte(`{"id":"evt_other"}`)); err != nil {
		t.Fatal(err)
	}
	until := time.Now()
	e.Publish(t, platformtest.Events(t, 2)...) // after it

	m, _ := e.manager(t, e.JS, jobs.Options{Batch: 3})
	j, err := m.Start(platformtest.Ctx(t), sub, since, until)
	if err != nil {
		t.Fatal(err)
	}
	if !jobs.ValidID(j.ID) || j.Total != 7 || j.State != jobs.StateRunning {
		t.Fatalf("Start = %+v", j)
	}
	s := e.waitDone(t, m, j.ID)
	if s.Total != 7 || s.Enqueued != 7 || s.SubscriptionID != sub.ID || !s.Since.Equal(since.UTC()) || !s.Until.Equal(until.UTC()) {
		t.Fatalf("done job %+v", s)
	}
	msgs := e.Redeliveries(t)
	if len(msgs) != 7 {
		t.Fatalf("%d redeliveries, want 7", len(msgs))
	}
	for i, msg := range msgs {
		body, _ := in[i].Marshal()
		h := msg.Header
		if msg.Subject != natsx.RedeliverSubject(sub.ID, in[i].ID) || string(msg.Data) != string(body) ||
			h.Get(consume.HeaderOriginalSubject) != event.Subject(in[i].Data.OrderID) ||
			h.Get(consume.HeaderOriginalStream) != natsx.StreamOrders ||
			h.Get(consume.HeaderOriginalSequence) != strconv.FormatUint(seqs[i], 10) ||
			h.Get(consume.HeaderEventID) != in[i].ID || h.Get(redeliver.HeaderSource) != "recover" ||
			h.Get(redeliver.HeaderJob) != j.ID || h.Get(jetstream.MsgIDHeader) != j.ID+":"+strconv.FormatUint(seqs[i], 10) ||
			h.Get(tracing.HeaderTraceparent) != platformtest.Traceparent(in[i]) {
			t.Fatalf("redelivery %d: %s %v", i, msg.Subject, h)
		}
	}

	// A range before every event is done at once, with nothing enqueued.
	j, err = m.Start(platformtest.Ctx(t), sub, since.Add(-2*time.Hour), since.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if s := e.waitDone(t, m, j.ID); s.Total != 0 || s.Enqueued != 0 {
		t.Fatalf("empty range: %+v", s)
	}
	if n := len(e.Redeliveries(t)); n != 7 {
		t.Fatalf("%d redeliveries after the empty job", n)
	}
}

// TestDeliveredIsCounted: the hook's counts reach the job's record, from
// several replicas, in batches.
func TestDeliveredIsCounted(t *testing.T) {
	e := start(t)
	sub := e.subscribe(t, "*")
	e.Publish(t, platformtest.Events(t, 2)...)
	a, _ := e.manager(t, e.JS, jobs.Options{})
	b, _ := e.manager(t, e.JS, jobs.Options{})
	j, err := a.Start(platformtest.Ctx(t), sub, time.Now().Add(-time.Hour), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, m := range []*jobs.Manager{a, b} {
		wg.Go(func() {
			for range 500 {
				m.Delivered(j.ID)
			}
			m.Delivered("job_nonsense")
			m.Delivered("")
		})
	}
	wg.Wait()
	testkit.Eventually(t, 15*time.Second, "1000 deliveries counted", func() bool {
		return e.status(t, b, j.ID).Delivered == 1000
	})
	// The counter is one key beside the record, written about once a
	// second per replica, not once per delivery.
	kv, err := e.JS.KeyValue(platformtest.Ctx(t), natsx.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := kv.History(platformtest.Ctx(t), j.ID+".delivered")
	if err != nil || len(hist) > 10 {
		t.Fatalf("the counter was written %d times for 1000 deliveries (%v)", len(hist), err)
	}
}

// restrict makes REDELIVERIES refuse new messages past max, so that a
// job gets stuck part of the way; unrestrict lifts that.
func restrict(t *testing.T, e env, max int64) {
	t.Helper()
	cfg := natsx.RedeliveriesStream(1)
	cfg.MaxMsgs, cfg.Discard = max, jetstream.DiscardNew
	if _, err := e.JS.UpdateStream(platformtest.Ctx(t), cfg); err != nil {
		t.Fatal(err)
	}
}

func unrestrict(t *testing.T, e env) {
	t.Helper()
	if _, err := e.JS.UpdateStream(platformtest.Ctx(t), natsx.RedeliveriesStream(1)); err != nil {
		t.Fatal(err)
	}
}

// position reads the job's stored position and owner.
func position(t *testing.T, e env, id string) (uint64, string) {
	t.Helper()
	kv, err := e.JS.KeyValue(platformtest.Ctx(t), natsx.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(platformtest.Ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var j jobs.Job
	_ = jsonUnmarshal(entry.Value(), &j)
	return j.Position, j.Owner
}

// checkOnce fails unless REDELIVERIES holds each of events exactly once.
func checkOnce(t *testing.T, e env, subID string, events []event.OrderPaid) {
	t.Helper()
	var got, want []string
	for _, m := range e.Redeliveries(t) {
		got = append(got, m.Subject)
	}
	for _, ev := range events {
		want = append(want, natsx.RedeliverSubject(subID, ev.ID))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%d redeliveries, want each of %d events once", len(got), len(want))
	}
}

// TestJobOfADeadReplicaIsTakenOver: a replica dies part of the way
// through a job; another takes the job over once the lease ran out, and
// goes on from the position written, without enqueueing anything twice.
func TestJobOfADeadReplicaIsTakenOver(t *testing.T) {
	e := start(t)
	sub := e.subscribe(t, "order.paid")
	since := time.Now()
	events := platformtest.Events(t, 100)
	e.Publish(t, events...)

	// Replica A gets stuck after 45 redeliveries, then dies: its
	// connection goes, and with it any chance to hand the lease back.
	restrict(t, e, 45)
	ncA, jsA := e.ownConn(t)
	opts := jobs.Options{LeaseTTL: time.Second, ProgressEvery: time.Millisecond, Batch: 10}
	optsA := opts
	optsA.Replica = "replica-a"
	a, _ := e.manager(t, jsA, optsA)
	j, err := a.Start(platformtest.Ctx(t), sub, since, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "replica A to get stuck", func() bool {
		return strings.Contains(e.logs.String(), "recovery job interrupted")
	})
	ncA.Close()
	pos, owner := position(t, e, j.ID)
	if owner != "replica-a" || pos < j.FirstSeq || pos >= j.LastSeq {
		t.Fatalf("after A: position %d (range %d-%d), owner %q", pos, j.FirstSeq, j.LastSeq, owner)
	}
	unrestrict(t, e)

	optsB := opts
	optsB.Replica = "replica-b"
	b, _ := e.manager(t, e.JS, optsB)
	s := e.waitDone(t, b, j.ID)
	if s.Total != 100 || s.Enqueued != 100 {
		t.Fatalf("job %+v", s)
	}
	if !strings.Contains(e.logs.String(), "recovery job taken over") {
		t.Fatal("B did not take the job over")
	}
	checkOnce(t, e, sub.ID, events)
}

// TestStoppedReplicaHandsTheJobOver: a replica that stops hands its lease
// back, so that another goes on at once rather than when the lease (a
// minute here) runs out.
func TestStoppedReplicaHandsTheJobOver(t *testing.T) {
	e := start(t)
	sub := e.subscribe(t, "order.paid")
	since := time.Now()
	events := platformtest.Events(t, 60)
	e.Publish(t, events...)
	restrict(t, e, 20)
	opts := jobs.Options{LeaseTTL: time.Minute, ProgressEvery: time.Millisecond, Batch: 5}
	a, stopA := e.manager(t, e.JS, opts)
	j, err := a.Start(platformtest.Ctx(t), sub, since, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "replica A to get stuck", func() bool {
		return strings.Contains(e.logs.String(), "recovery job interrupted")
	})
	stopA()
	if _, owner := position(t, e, j.ID); owner != "" {
		t.Fatalf("the lease is still %q's", owner)
	}
	unrestrict(t, e)
	b, _ := e.manager(t, e.JS, opts)
	start := time.Now()
	s := e.waitDone(t, b, j.ID)
	if time.Since(start) > 30*time.Second || s.Enqueued != 60 {
		t.Fatalf("job %+v after %s", s, time.Since(start))
	}
	checkOnce(t, e, sub.ID, events)
}

// TestStartValidatesTheRange: a range that ends in the future, is empty
// or reversed, or starts before ORDERS' MaxAge is refused field by field.
func TestStartValidatesTheRange(t *testing.T) {
	e := start(t)
	sub := e.subscribe(t, "order.paid")
	m, _ := e.manager(t, e.JS, jobs.Options{})
	now := time.Now()
	for _, tt := range []struct {
		name         string
		since, until time.Time
		field        string
	}{
		{"future until", now.Add(-time.Hour), now.Add(time.Hour), "until"},
		{"since after until", now.Add(-time.Hour), now.Add(-2 * time.Hour), "since"},
		{"since equal to until", now.Add(-time.Hour), now.Add(-time.Hour), "since"},
		{"future since", now.Add(time.Hour), time.Time{}, "since"},
		{"older than ORDERS keeps", now.Add(-8 * 24 * time.Hour), time.Time{}, "since"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Start(platformtest.Ctx(t), sub, tt.since, tt.until)
			var ie *jobs.InvalidError
			if !errors.As(err, &ie) || ie.Fields[tt.field] == "" {
				t.Fatalf("Start = %v, want an InvalidError on %s", err, tt.field)
			}
		})
	}
	if _, err := m.Status(platformtest.Ctx(t), "job_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("Status of an unknown job = %v", err)
	}
	if _, err := m.Status(platformtest.Ctx(t), "../x"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("Status of a bad id = %v", err)
	}
}

// TestJobOfADeletedSubscriptionFails: a job whose subscription is gone
// stops for good, and says why.
func TestJobOfADeletedSubscriptionFails(t *testing.T) {
	e := start(t)
	sub := e.subscribe(t, "order.paid")
	since := time.Now()
	e.Publish(t, platformtest.Events(t, 3)...)
	if err := e.reg.Delete(platformtest.Ctx(t), sub.ID, 0); err != nil {
		t.Fatal(err)
	}
	m, _ := e.manager(t, e.JS, jobs.Options{})
	j, err := m.Start(platformtest.Ctx(t), sub, since, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var s jobs.Status
	testkit.Eventually(t, 20*time.Second, "the job to fail", func() bool {
		s = e.status(t, m, j.ID)
		return s.State == jobs.StateFailed
	})
	if s.Error != "the subscription was deleted" || len(e.Redeliveries(t)) != 0 {
		t.Fatalf("job %+v", s)
	}
}
