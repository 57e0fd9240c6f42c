package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// counterAttempts bounds the compare-and-set rounds of one increment.
const counterAttempts = 10

// Delivered counts one redelivery of job jobID that its receiver answered
// 2xx. The redeliver consumer calls it for every delivered message that
// carries a Jethook-Job header; it only adds to a count in memory, which
// Run writes to the job's counter about once a second. A header that
// names no job is ignored.
func (m *Manager) Delivered(jobID string) {
	if !ValidID(jobID) {
		return
	}
	m.mu.Lock()
	m.pending[jobID]++
	m.mu.Unlock()
}

// flush adds the pending counts to their jobs' counters. A count that
// cannot be written stays pending for the next flush.
func (m *Manager) flush(ctx context.Context) {
	m.mu.Lock()
	batch := m.pending
	m.pending = map[string]int64{}
	m.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	kv, err := m.bucket(ctx)
	for id, n := range batch {
		if err == nil {
			err = increment(ctx, kv, id, n)
		}
		if err != nil {
			m.mu.Lock()
			m.pending[id] += n
			m.mu.Unlock()
		}
	}
	if err != nil {
		m.log.Warn("delivered counts not written yet", "error", err)
	}
}

// counter reads job id's delivered count and its revision, 0 and 0 when
// none was written.
func counter(ctx context.Context, kv jetstream.KeyValue, id string) (int64, uint64, error) {
	e, err := kv.Get(ctx, deliveredKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: read job %s's count: %w", ErrUnavailable, id, err)
	}
	n, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("job %s: bad delivered count %q", id, e.Value())
	}
	return n, e.Revision(), nil
}

// increment adds n to job id's delivered count, by compare-and-set, since
// every replica adds to it.
func increment(ctx context.Context, kv jetstream.KeyValue, id string, n int64) error {
	for range counterAttempts {
		cur, rev, err := counter(ctx, kv, id)
		if err != nil {
			return err
		}
		value := []byte(strconv.FormatInt(cur+n, 10))
		if rev == 0 {
			_, err = kv.Create(ctx, deliveredKey(id), value)
		} else {
			_, err = kv.Update(ctx, deliveredKey(id), value, rev)
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // Another replica added first.
		default:
			return fmt.Errorf("%w: write job %s's count: %w", ErrUnavailable, id, err)
		}
	}
	return fmt.Errorf("%w: job %s's count keeps changing under us", ErrUnavailable, id)
}

// flushLoop writes the delivered counts every FlushEvery until ctx ends,
// and once more then.
func (m *Manager) flushLoop(ctx context.Context) {
	t := time.NewTicker(m.opts.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			m.flush(final)
			cancel()
			return
		case <-t.C:
			m.flush(ctx)
		}
	}
}
