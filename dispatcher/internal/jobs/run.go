package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/history"
	"github.com/jethook/jethook/dispatcher/internal/redeliver"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/shared/natsx"
)

// retryWait is the pause before a job, or the watch, starts again after
// NATS failed it.
const retryWait = time.Second

// Run claims and runs jobs until ctx ends: a new job as soon as the watch
// of the bucket shows it (every replica tries; one wins), and one whose
// lease ran out (its replica died, or handed it back when it stopped) as
// soon as the lease is seen to be over. It also writes the
// delivered counts. When ctx ends, the jobs it runs stop and hand their
// lease back, so that another replica goes on at once, and Run returns
// nil.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.flushLoop(ctx) })
	defer wg.Wait()
	wait := retryWait
	for ctx.Err() == nil {
		started := time.Now()
		err := m.watch(ctx, &wg)
		if err == nil || ctx.Err() != nil {
			continue
		}
		// A watch that ran a while is a blip; one that keeps failing at
		// once (NATS away, the bucket not provisioned yet) is retried
		// less and less often.
		if time.Since(started) > time.Minute {
			wait = retryWait
		}
		m.log.Warn("recovery jobs watch stopped, starting again", "error", err, "retry_in", wait.String())
		sleep(ctx, wait)
		wait = min(2*wait, maxRetryWait)
	}
	return nil
}

// maxRetryWait bounds the pause between watches that fail at once.
const maxRetryWait = 15 * time.Second

// watch follows the job records (the delivered counters are keys of two
// tokens, and stay out of it) and claims what may be claimed.
func (m *Manager) watch(ctx context.Context, wg *sync.WaitGroup) error {
	kv, err := m.bucket(ctx)
	if err != nil {
		return err
	}
	w, err := kv.WatchFiltered(ctx, []string{"*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch %s: %w", natsx.BucketJobs, err)
	}
	defer func() { _ = w.Stop() }()
	known := map[string]Job{} // running jobs, as last seen
	tick := time.NewTicker(m.opts.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch ended")
			}
			if e == nil {
				continue // every current record has been seen
			}
			var j Job
			if err := json.Unmarshal(e.Value(), &j); err != nil {
				m.log.Warn("bad job record skipped", "job_id", e.Key(), "error", err)
				continue
			}
			if j.State != StateRunning {
				delete(known, j.ID)
				continue
			}
			known[j.ID] = j
			m.claim(ctx, kv, j, wg)
		case <-tick.C:
			for _, j := range known {
				m.claim(ctx, kv, j, wg)
			}
		}
	}
}

// claim takes job j when it may be taken: its record is read again and
// the lease written by compare-and-set, so that of two replicas trying at
// once one wins.
func (m *Manager) claim(ctx context.Context, kv jetstream.KeyValue, j Job, wg *sync.WaitGroup) {
	now := m.now()
	if !j.claimable(now) || !m.mark(j.ID) {
		return
	}
	cur, rev, err := get(ctx, kv, j.ID)
	if err == nil && cur.claimable(now) {
		before := cur.Owner
		cur.Owner, cur.LeaseUntil = m.opts.Replica, now.Add(m.opts.LeaseTTL)
		if rev, err = m.put(ctx, kv, &cur, rev); err == nil {
			if before == "" {
				m.log.Info("recovery job running", "job_id", cur.ID, "subscription_id", cur.SubscriptionID, "position", cur.Position)
			} else {
				m.log.Info("recovery job taken over", "job_id", cur.ID, "subscription_id", cur.SubscriptionID,
					"from_replica", before, "position", cur.Position)
			}
			wg.Go(func() {
				defer m.unmark(cur.ID)
				m.execute(ctx, kv, cur, rev)
			})
			return
		}
	}
	m.unmark(j.ID)
}

// mark notes that this replica runs job id; false when it does already.
func (m *Manager) mark(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running[id] {
		return false
	}
	m.running[id] = true
	return true
}

func (m *Manager) unmark(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.running, id)
}

// failure is a reason a job stops for good.
type failure struct{ reason string }

func (f *failure) Error() string { return f.reason }

// execute runs a claimed job to its end, or until it is lost or ctx ends.
func (m *Manager) execute(ctx context.Context, kv jetstream.KeyValue, j Job, rev uint64) {
	r := &runner{Manager: m, ctx: ctx, kv: kv, job: j, rev: rev, lastWrite: m.now()}
	err := r.run(ctx)
	var f *failure
	switch {
	case err == nil:
		m.log.Info("recovery job done", "job_id", j.ID, "subscription_id", j.SubscriptionID, "total", r.job.Total)
	case errors.Is(err, errLeaseLost):
		m.log.Warn("recovery job lost to another replica", "job_id", j.ID)
	case errors.As(err, &f):
		r.job.State, r.job.Error, r.job.Owner, r.job.LeaseUntil = StateFailed, f.reason, "", time.Time{}
		record, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := m.put(record, kv, &r.job, r.rev); err != nil {
			m.log.Error("recovery job failure not recorded", "job_id", j.ID, "error", err)
		}
		m.log.Error("recovery job failed", "job_id", j.ID, "subscription_id", j.SubscriptionID, "error", f.reason)
	default:
		// Stopping: hand the lease back, so that another replica goes on
		// now rather than when the lease runs out.
		release, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		r.job.Owner, r.job.LeaseUntil = "", time.Time{}
		if _, err := m.put(release, kv, &r.job, r.rev); err != nil {
			m.log.Warn("recovery job lease not handed back; it runs out instead", "job_id", j.ID, "error", err)
		}
	}
}

// runner is one replica's run of one job.
type runner struct {
	*Manager
	ctx       context.Context // execute's
	kv        jetstream.KeyValue
	job       Job
	rev       uint64
	lastWrite time.Time

	batch   []jetstream.PubAckFuture
	scanned uint64 // the last ORDERS sequence read
}

// run enqueues the job's events from its position on, and marks it done.
// NATS failures make it start again from the last position reached; it
// returns a *failure, errLeaseLost, or ctx's error.
func (r *runner) run(ctx context.Context) error {
	for {
		err := r.pass(ctx)
		switch {
		case err == nil:
			r.job.State, r.job.Total, r.job.Position = StateDone, r.job.Enqueued, max(r.job.Position, r.job.LastSeq)
			r.job.Owner, r.job.LeaseUntil = "", time.Time{}
			_, err = r.put(ctx, r.kv, &r.job, r.rev)
			if err == nil || errors.Is(err, errLeaseLost) {
				return err
			}
		case ctx.Err() != nil:
			return ctx.Err()
		}
		var f *failure
		if errors.As(err, &f) || errors.Is(err, errLeaseLost) {
			return err
		}
		r.log.Warn("recovery job interrupted, going on from its position", "job_id", r.job.ID,
			"position", r.job.Position, "error", err, "retry_in", retryWait.String())
		r.batch = nil
		if !sleep(ctx, retryWait) {
			return ctx.Err()
		}
	}
}

// pass checks that the job can go on, and scans ORDERS from its position
// to the end of its range.
func (r *runner) pass(ctx context.Context) error {
	if _, err := r.subs.Get(ctx, r.job.SubscriptionID); errors.Is(err, registry.ErrNotFound) {
		return &failure{reason: "the subscription was deleted"}
	} else if err != nil {
		return err
	}
	if r.job.Position >= r.job.LastSeq {
		return nil
	}
	orders, err := r.js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		return err
	}
	if first := orders.CachedInfo().State.FirstSeq; r.job.Position+1 < first {
		return &failure{reason: fmt.Sprintf("ORDERS sequences %d to %d aged out before their events were enqueued",
			r.job.Position+1, min(first-1, r.job.LastSeq))}
	}
	r.scanned = r.job.Position
	err = history.Scan(ctx, r.js, natsx.StreamOrders, history.Range{
		Filters: r.job.Filters, From: r.job.Position + 1, To: r.job.LastSeq,
	}, r.add)
	if err != nil {
		return err
	}
	return r.flush(ctx, true)
}

// add enqueues one event of the range.
func (r *runner) add(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
	seq := meta.Sequence.Stream
	r.scanned = seq
	// What is not an event cannot be delivered; the subscription's own
	// consumer dead-lettered it already.
	if id := attempt.BodyEventID(m.Data()); id != "" {
		msgID := r.job.ID + ":" + fmt.Sprint(seq)
		out := redeliver.Message(r.job.SubscriptionID, id, m.Data(),
			redeliver.Origin{Subject: m.Subject(), Stream: natsx.StreamOrders, Sequence: seq, Header: m.Headers()},
			attempt.SourceRecover, r.job.ID, msgID)
		f, err := r.js.PublishMsgAsync(out, jetstream.WithExpectStream(natsx.StreamRedeliveries))
		if err != nil {
			return fmt.Errorf("enqueue ORDERS sequence %d: %w", seq, err)
		}
		r.batch = append(r.batch, f)
	}
	if len(r.batch) >= r.opts.Batch || r.now().Sub(r.lastWrite) >= r.opts.ProgressEvery {
		return r.flush(r.ctx, false)
	}
	return nil
}

// flush waits for the PubAcks of the batch, moves the position past it,
// and writes the job when a progress write is due (or final), which also
// renews the lease.
func (r *runner) flush(ctx context.Context, final bool) error {
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, f := range r.batch {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("enqueue: %w", err)
		case <-wait.Done():
			return fmt.Errorf("enqueue: no PubAck: %w", wait.Err())
		}
	}
	// Redeliveries the server dropped as duplicates were enqueued by an
	// earlier run past the position it wrote: they count all the same.
	r.job.Enqueued += int64(len(r.batch))
	r.job.Position = r.scanned
	r.batch = r.batch[:0]
	if final || r.now().Sub(r.lastWrite) < r.opts.ProgressEvery {
		return nil // run writes the job as done when final
	}
	r.job.LeaseUntil = r.now().Add(r.opts.LeaseTTL)
	rev, err := r.put(ctx, r.kv, &r.job, r.rev)
	if err != nil {
		return err
	}
	r.rev, r.lastWrite = rev, r.now()
	return nil
}

// sleep waits d or until ctx ends, and reports whether d passed.
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
