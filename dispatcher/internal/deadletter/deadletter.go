package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/history"
	"github.com/jethook/jethook/dispatcher/internal/redeliver"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/natsx"
)

// ErrUnavailable means DEADLETTER or REDELIVERIES could not be read or
// written: NATS did not answer, or a stream does not exist yet. The call
// may be retried; a replay retried enqueues nothing twice (see Replay).
var ErrUnavailable = errors.New("the dead letters are unavailable")

// Letter is one dead letter as the admin API shows it.
type Letter struct {
	EventID string `json:"event_id"`
	// Subject is where the event was when it was given up, in ORDERS:
	// orders.paid.<order id>.
	Subject    string `json:"subject"`
	Attempts   int    `json:"attempts"`
	LastStatus int    `json:"last_status"`
	LastError  string `json:"last_error"`
	// Reason says why it was given up: max_deliveries, permanent, gone, …
	Reason         string    `json:"reason"`
	DeadLetteredAt time.Time `json:"dead_lettered_at"`
}

// Page is one page of dead letters, newest first.
type Page struct {
	Letters []Letter
	// Next is the Before of the following page, or 0 at the end.
	Next uint64
}

// Defaults of a Store.
const (
	// DefaultBatch is how many dead letters a replay enqueues before it
	// waits for their PubAcks and deletes them: what it holds at once.
	DefaultBatch = 256
	// DefaultTimeout bounds each round of a replay against NATS.
	DefaultTimeout = 10 * time.Second
	// deleters delete a batch's dead letters concurrently.
	deleters = 16
)

// Store reads and replays dead letters.
type Store struct {
	js  jetstream.JetStream
	log *slog.Logger
	// Batch and Timeout tune replays; zero means the defaults.
	Batch   int
	Timeout time.Duration
}

// New returns a Store on js.
func New(js jetstream.JetStream, logger *slog.Logger) *Store {
	return &Store{js: js, log: logger}
}

// Page returns the dead letters of subscription subID, newest first.
func (s *Store) Page(ctx context.Context, subID string, before uint64, limit int) (Page, error) {
	st, err := s.js.Stream(ctx, natsx.StreamDeadletter)
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	p, err := history.Newest(ctx, st, history.Query{Filter: natsx.DeadletterFilter(subID), Before: before, Limit: limit})
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out := Page{Letters: make([]Letter, 0, len(p.Msgs)), Next: p.Next}
	for _, m := range p.Msgs {
		out.Letters = append(out.Letters, letter(m.Header.Get, m.Data, m.Time))
	}
	return out, nil
}

// letter reads a dead letter's headers (and, for an event id the headers
// lack, its body).
func letter(header func(string) string, body []byte, stored time.Time) Letter {
	l := Letter{
		EventID:   header(consume.HeaderEventID),
		Subject:   header(consume.HeaderOriginalSubject),
		LastError: header(consume.HeaderLastError),
		Reason:    header(consume.HeaderReason),
	}
	if l.EventID == "" {
		l.EventID = attempt.BodyEventID(body)
	}
	l.Attempts, _ = strconv.Atoi(header(consume.HeaderAttempts))
	l.LastStatus, _ = strconv.Atoi(header(consume.HeaderLastStatus))
	l.DeadLetteredAt = stored.UTC()
	if t, err := time.Parse(time.RFC3339Nano, header(consume.HeaderDeadLetteredAt)); err == nil {
		l.DeadLetteredAt = t.UTC()
	}
	return l
}

// Replay delivers the dead letters of subscription subID once more, to it
// alone: those of the events named in eventIDs, or all of them when
// eventIDs is nil. It returns how many it enqueued.
//
// Each dead letter is published to REDELIVERIES (source "replay") with a
// Nats-Msg-Id made of the subscription and the dead letter's own
// sequence, and deleted from DEADLETTER once the PubAck is in. So a replay
// asked twice, one after the other, finds nothing the second time; two at
// once enqueue each dead letter once, the server dropping the second copy
// within its duplicate window. A replay interrupted between a PubAck and
// the delete, and asked again more than that window later, enqueues those
// few once more: the receiver sees the same webhook-id twice, as
// at-least-once delivery allows. An event that fails again becomes a new
// dead letter, with a new sequence, that a later replay finds.
//
// The replay covers the dead letters that exist when it starts, oldest
// first, reading and enqueueing a batch at a time; there is no cap on
// their number. A dead letter without a usable event id (its body was not
// an event) cannot be delivered and stays where it is.
func (s *Store) Replay(ctx context.Context, subID string, eventIDs []string) (int, error) {
	var want map[string]bool
	if eventIDs != nil {
		want = make(map[string]bool, len(eventIDs))
		for _, id := range eventIDs {
			want[id] = true
		}
	}
	r := replay{Store: s, ctx: ctx, subID: subID, want: want, batchSize: s.Batch, timeout: s.Timeout}
	if r.batchSize <= 0 {
		r.batchSize = DefaultBatch
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	lookup, cancel := context.WithTimeout(ctx, r.timeout)
	st, err := s.js.Stream(lookup, natsx.StreamDeadletter)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	r.stream = st
	last := st.CachedInfo().State.LastSeq
	if last == 0 {
		return 0, nil
	}
	err = history.Scan(ctx, s.js, natsx.StreamDeadletter, history.Range{
		Filters: []string{natsx.DeadletterFilter(subID)}, From: 1, To: last,
	}, r.add)
	if err == nil {
		err = r.flush(ctx)
	}
	if err != nil {
		return r.replayed, fmt.Errorf("%w: replay stopped after %d: %w", ErrUnavailable, r.replayed, err)
	}
	if r.replayed > 0 {
		s.log.Info("dead letters replayed", "subscription_id", subID, "replayed", r.replayed)
	}
	return r.replayed, nil
}

// replay is one call of Replay.
type replay struct {
	*Store
	ctx       context.Context // the call's
	subID     string
	want      map[string]bool // nil: all
	batchSize int
	timeout   time.Duration
	stream    jetstream.Stream

	batch    []pending
	replayed int
}

// pending is a dead letter on its way to REDELIVERIES.
type pending struct {
	seq    uint64
	future jetstream.PubAckFuture
}

func (r *replay) add(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
	h := m.Headers()
	eventID := h.Get(consume.HeaderEventID)
	if eventID == "" {
		eventID = attempt.BodyEventID(m.Data())
	}
	if !attempt.ValidEventID(eventID) || (r.want != nil && !r.want[eventID]) {
		return nil
	}
	seq, _ := strconv.ParseUint(h.Get(consume.HeaderOriginalSequence), 10, 64)
	from := redeliver.Origin{
		Subject:  h.Get(consume.HeaderOriginalSubject),
		Stream:   h.Get(consume.HeaderOriginalStream),
		Sequence: seq,
		Header:   h,
	}
	dlSeq := meta.Sequence.Stream
	msgID := "replay:" + r.subID + ":" + strconv.FormatUint(dlSeq, 10)
	out := redeliver.Message(r.subID, eventID, m.Data(), from, attempt.SourceReplay, "", msgID)
	f, err := r.js.PublishMsgAsync(out, jetstream.WithExpectStream(natsx.StreamRedeliveries))
	if err != nil {
		return fmt.Errorf("enqueue dead letter %d: %w", dlSeq, err)
	}
	r.batch = append(r.batch, pending{seq: dlSeq, future: f})
	if len(r.batch) >= r.batchSize {
		return r.flush(r.ctx)
	}
	return nil
}

// flush waits for the batch's PubAcks, counts the redeliveries the server
// stored (not those it dropped as duplicates), and deletes the dead
// letters that are enqueued.
func (r *replay) flush(ctx context.Context) error {
	if len(r.batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var enqueued []uint64
	var failed error
	for _, p := range r.batch {
		select {
		case ack := <-p.future.Ok():
			if !ack.Duplicate {
				r.replayed++
			}
			enqueued = append(enqueued, p.seq)
		case err := <-p.future.Err():
			failed = errors.Join(failed, fmt.Errorf("enqueue dead letter %d: %w", p.seq, err))
		case <-ctx.Done():
			failed = errors.Join(failed, fmt.Errorf("enqueue dead letter %d: no PubAck: %w", p.seq, ctx.Err()))
		}
	}
	r.batch = r.batch[:0]
	return errors.Join(failed, r.delete(ctx, enqueued))
}

// delete removes the dead letters whose redelivery is enqueued; one
// already gone (a replay running beside this one) is fine.
func (r *replay) delete(ctx context.Context, seqs []uint64) error {
	var mu sync.Mutex
	var failed error
	work := make(chan uint64)
	var wg sync.WaitGroup
	for range min(deleters, len(seqs)) {
		wg.Go(func() {
			for seq := range work {
				if err := r.stream.DeleteMsg(ctx, seq); err != nil && !r.gone(ctx, seq) {
					mu.Lock()
					failed = errors.Join(failed, fmt.Errorf("delete dead letter %d: %w", seq, err))
					mu.Unlock()
				}
			}
		})
	}
	for _, seq := range seqs {
		work <- seq
	}
	close(work)
	wg.Wait()
	return failed
}

// gone reports whether the dead letter at seq no longer exists: the
// client does not tell "no such message" from other failures of a delete.
func (r *replay) gone(ctx context.Context, seq uint64) bool {
	_, err := r.stream.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}
