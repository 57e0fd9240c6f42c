package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/natsx"
)

// Subscriptions is what jobs need of the registry: whether the
// subscription a job is for still exists.
type Subscriptions interface {
	Get(ctx context.Context, id string) (registry.Entry, error)
}

var _ Subscriptions = (*registry.Registry)(nil)

// Options tune a Manager; the zero value is what production runs.
type Options struct {
	// LeaseTTL is how long a job's lease holds without being renewed:
	// how soon another replica takes over the job of one that died. The
	// replicas' clocks must agree to well within it. Zero means 15 s.
	LeaseTTL time.Duration
	// ProgressEvery spaces the writes of a running job's position, which
	// renew its lease; zero means one second.
	ProgressEvery time.Duration
	// FlushEvery spaces the writes of the delivered counters; zero means
	// one second.
	FlushEvery time.Duration
	// Batch is how many events a job enqueues before it waits for their
	// PubAcks; zero means 256.
	Batch int
	// Replica names this process in the leases it holds; empty means a
	// fresh random name.
	Replica string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Manager makes, runs and reports recovery jobs. It is safe for
// concurrent use; Run must run for jobs to make progress.
type Manager struct {
	js   jetstream.JetStream
	subs Subscriptions
	log  *slog.Logger
	opts Options

	kv atomic.Pointer[kvHandle]

	mu      sync.Mutex
	running map[string]bool  // jobs this replica runs
	pending map[string]int64 // delivered counts not written yet
}

// kvHandle holds the bucket once found; atomic.Pointer cannot hold an
// interface.
type kvHandle struct{ kv jetstream.KeyValue }

// New returns a Manager on js.
func New(js jetstream.JetStream, subs Subscriptions, logger *slog.Logger, opts Options) *Manager {
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = time.Second
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 256
	}
	if opts.Replica == "" {
		opts.Replica = uuid.NewString()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{js: js, subs: subs, log: logger.With("replica", opts.Replica), opts: opts,
		running: map[string]bool{}, pending: map[string]int64{}}
}

func (m *Manager) now() time.Time { return m.opts.Now().UTC() }

// bucket returns the jobs bucket, which platform.Provision creates.
func (m *Manager) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	if h := m.kv.Load(); h != nil {
		return h.kv, nil
	}
	kv, err := m.js.KeyValue(ctx, natsx.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("%w: bucket %s: %w", ErrUnavailable, natsx.BucketJobs, err)
	}
	m.kv.Store(&kvHandle{kv: kv})
	return kv, nil
}

// Start makes a recovery job for subscription sub over [since, until):
// until zero means now. since must come before until, until must not be
// in the future, and since must not be older than ORDERS keeps events
// (its MaxAge); otherwise Start returns an *InvalidError. The job is
// counted and stored, for the Run of some replica to take, and returned.
func (m *Manager) Start(ctx context.Context, sub subscription.Subscription, since, until time.Time) (Job, error) {
	now := m.now()
	if until.IsZero() {
		until = now
	}
	since, until = since.UTC(), until.UTC()
	errs := map[string]string{}
	if until.After(now) {
		errs["until"] = "must not be in the future"
	}
	if !since.Before(until) {
		errs["since"] = "must be before until (which is now when it is not given)"
	}
	orders, err := m.js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		return Job{}, fmt.Errorf("%w: stream %s: %w", ErrUnavailable, natsx.StreamOrders, err)
	}
	if maxAge := orders.CachedInfo().Config.MaxAge; maxAge > 0 && since.Before(now.Add(-maxAge)) {
		errs["since"] = fmt.Sprintf("is older than ORDERS keeps events (%s): the earliest is %s",
			maxAge, now.Add(-maxAge).Truncate(time.Second).Add(time.Second).Format(time.RFC3339))
	}
	if len(errs) > 0 {
		return Job{}, &InvalidError{Fields: errs}
	}
	filters := sub.Filters()
	first, fromSince, err := m.boundary(ctx, filters, since)
	if err != nil {
		return Job{}, err
	}
	end, fromUntil, err := m.boundary(ctx, filters, until)
	if err != nil {
		return Job{}, err
	}
	id, err := NewID()
	if err != nil {
		return Job{}, err
	}
	j := Job{
		ID: id, SubscriptionID: sub.ID, State: StateRunning, Since: since, Until: until, Filters: filters,
		FirstSeq: first, LastSeq: end - 1, Position: first - 1, CreatedAt: now, UpdatedAt: now,
	}
	// Events published between the two lookups count towards the first
	// only; the count is exact once the job is done.
	if fromSince > fromUntil {
		j.Total = int64(fromSince - fromUntil)
	}
	kv, err := m.bucket(ctx)
	if err != nil {
		return Job{}, err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return Job{}, err
	}
	if _, err := kv.Create(ctx, id, b); err != nil {
		return Job{}, fmt.Errorf("%w: store job %s: %w", ErrUnavailable, id, err)
	}
	m.log.Info("recovery job made", "job_id", id, "subscription_id", sub.ID, "since", since, "until", until,
		"total", j.Total, "first_seq", j.FirstSeq, "last_seq", j.LastSeq)
	return j, nil
}

// boundary returns the first ORDERS sequence at or after t among the
// messages that match filters (or past the last message), and how many
// matching messages there are from it on. The server works both out when
// a consumer starting at t is made, so a consumer is made, read and
// deleted: no message travels.
func (m *Manager) boundary(ctx context.Context, filters []string, t time.Time) (uint64, uint64, error) {
	c, err := m.js.CreateConsumer(ctx, natsx.StreamOrders, jetstream.ConsumerConfig{
		Description:       "recovery job range lookup",
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &t,
		FilterSubjects:    filters,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%w: look up the range in %s: %w", ErrUnavailable, natsx.StreamOrders, err)
	}
	info := c.CachedInfo()
	if err := m.js.DeleteConsumer(ctx, natsx.StreamOrders, info.Name); err != nil {
		m.log.Debug("range lookup consumer not deleted; the server drops it soon", "error", err)
	}
	return info.Delivered.Stream + 1, info.NumPending, nil
}

// Status returns job id as stored, with its delivered count.
func (m *Manager) Status(ctx context.Context, id string) (Status, error) {
	if !ValidID(id) {
		return Status{}, ErrNotFound
	}
	kv, err := m.bucket(ctx)
	if err != nil {
		return Status{}, err
	}
	j, _, err := get(ctx, kv, id)
	if err != nil {
		return Status{}, err
	}
	delivered, _, err := counter(ctx, kv, id)
	if err != nil {
		return Status{}, err
	}
	return j.status(delivered), nil
}

// get reads job id and its revision.
func get(ctx context.Context, kv jetstream.KeyValue, id string) (Job, uint64, error) {
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Job{}, 0, ErrNotFound
	}
	if err != nil {
		return Job{}, 0, fmt.Errorf("%w: read job %s: %w", ErrUnavailable, id, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return Job{}, 0, fmt.Errorf("job %s: bad record: %w", id, err)
	}
	return j, e.Revision(), nil
}

// put writes j if its record is still at revision rev, and returns the new
// revision; errLeaseLost when another replica wrote it in between (took
// the job over).
func (m *Manager) put(ctx context.Context, kv jetstream.KeyValue, j *Job, rev uint64) (uint64, error) {
	j.UpdatedAt = m.now()
	b, err := json.Marshal(j)
	if err != nil {
		return 0, err
	}
	next, err := kv.Update(ctx, j.ID, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, errLeaseLost
	}
	if err != nil {
		return 0, fmt.Errorf("%w: write job %s: %w", ErrUnavailable, j.ID, err)
	}
	return next, nil
}

// errLeaseLost means another replica holds the job now.
var errLeaseLost = errors.New("another replica took the job over")
