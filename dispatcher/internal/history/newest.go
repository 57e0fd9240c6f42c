package history

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultMaxScan bounds the messages Newest reads for one page when Keep
// discards some, so that a filter that keeps almost nothing costs a
// bounded request; the page then ends early, with a cursor.
const DefaultMaxScan = 5000

// MaxSpan bounds the stream sequences one page walks back over: a filter
// whose matches are millions of messages apart gets a short page (even an
// empty one) with a cursor, rather than a request that runs into its
// timeout.
const MaxSpan = 1 << 22

// Query asks for one page of the messages matching Filter, newest first.
type Query struct {
	// Filter is a subject filter; wildcards are allowed.
	Filter string
	// Before makes the page start below this stream sequence: the Next of
	// the previous page. Zero starts at the newest message.
	Before uint64
	// Limit is the most messages the page holds, at least 1.
	Limit int
	// Keep, when set, decides which matching messages the page holds;
	// those it refuses are passed over.
	Keep func(*jetstream.RawStreamMsg) bool
	// MaxScan bounds the messages read for the page when Keep is set;
	// zero means DefaultMaxScan.
	MaxScan int
}

// Page is one page of messages, newest first.
type Page struct {
	Msgs []*jetstream.RawStreamMsg
	// Next is the Before of the following page, or 0 when no older
	// message matches. The last page may be empty: a page that fills up
	// does not look further to see whether anything older is left.
	Next uint64
}

// Newest returns the newest messages of s matching q.Filter below
// q.Before.
//
// JetStream reads forward only: GetMsg with a subject returns the first
// match at or after a sequence. So Newest walks back from the newest end
// in windows of sequences, reading each window forward, and sizes each
// window from the density of matches seen so far, so that a page costs
// about one read per message it holds, plus one per window, whether the
// filter matches every message or one in a million.
//
// A filter without ">" names few subjects (attempts.<sub>.<event>,
// attempts.*.<event>): the server's subject index finds its newest and
// oldest matches at once, and the walk covers just the span between them.
// A filter ending in ">" may name a subject per event, and those lookups
// would visit every one of them; its walk is bounded by the stream's first
// and last sequences instead, which cost nothing to learn.
func Newest(ctx context.Context, s jetstream.Stream, q Query) (Page, error) {
	if q.Limit < 1 {
		return Page{}, fmt.Errorf("history: limit %d, want at least 1", q.Limit)
	}
	w := walk{s: s, q: q, maxScan: q.MaxScan, keep: q.Keep}
	if w.maxScan <= 0 {
		w.maxScan = DefaultMaxScan
	}
	if w.keep == nil {
		w.keep = func(*jetstream.RawStreamMsg) bool { return true }
	}
	if err := w.bounds(ctx); err != nil || w.empty {
		return Page{}, err
	}
	return w.run(ctx)
}

// walk is one call of Newest.
type walk struct {
	s       jetstream.Stream
	q       Query
	maxScan int
	keep    func(*jetstream.RawStreamMsg) bool

	lowest, hi uint64 // the sequences left to read
	empty      bool   // nothing matches below q.Before

	page    Page
	scanned int
	// examined is the oldest sequence looked at so far: the next page's
	// Before when this one stops early.
	examined uint64
}

// bounds finds the span of sequences the walk covers, and takes the
// newest match when it was read to find it.
func (w *walk) bounds(ctx context.Context) error {
	info, err := w.s.Info(ctx)
	if err != nil {
		return fmt.Errorf("history: stream info: %w", err)
	}
	st := info.State
	w.lowest, w.hi = st.FirstSeq, st.LastSeq
	if st.Msgs == 0 || (w.q.Before != 0 && w.q.Before <= w.lowest) {
		w.empty = true
		return nil
	}
	if w.q.Before != 0 {
		w.hi = min(w.hi, w.q.Before-1)
	}
	if strings.HasSuffix(w.q.Filter, ">") {
		return nil
	}
	oldest, err := w.s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(w.q.Filter))
	if err != nil {
		return w.notFound(err, "oldest match")
	}
	w.lowest = max(w.lowest, oldest.Sequence)
	if w.q.Before != 0 && w.q.Before <= w.lowest {
		w.empty = true
		return nil
	}
	newest, err := w.s.GetLastMsgForSubject(ctx, w.q.Filter)
	if err != nil {
		return w.notFound(err, "newest match")
	}
	if newest.Sequence <= w.hi {
		w.take(newest)
		w.hi = newest.Sequence - 1
	}
	return nil
}

// notFound turns "no such message" into an empty walk.
func (w *walk) notFound(err error, what string) error {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		w.empty = true
		return nil
	}
	return fmt.Errorf("history: %s of %s: %w", what, w.q.Filter, err)
}

func (w *walk) take(m *jetstream.RawStreamMsg) {
	w.scanned++
	w.examined = m.Sequence
	if w.keep(m) {
		w.page.Msgs = append(w.page.Msgs, m)
	}
}

func (w *walk) full() bool { return len(w.page.Msgs) >= w.q.Limit || w.scanned >= w.maxScan }

func (w *walk) run(ctx context.Context) (Page, error) {
	window := uint64(w.q.Limit)
	var spanned uint64
	for w.hi >= w.lowest && !w.full() && spanned < MaxSpan {
		lo := w.lowest
		if w.hi-w.lowest+1 > window {
			lo = w.hi - window + 1
		}
		batch, err := readWindow(ctx, w.s, w.q.Filter, lo, w.hi)
		if err != nil {
			return Page{}, err
		}
		taken := 0
		for i := len(batch) - 1; i >= 0 && !w.full(); i-- {
			w.take(batch[i])
			taken++
		}
		if taken < len(batch) {
			break // full inside this window
		}
		w.examined = lo
		spanned += w.hi - lo + 1
		if lo == w.lowest {
			break
		}
		w.hi = lo - 1
		window = nextWindow(window, uint64(taken), uint64(w.q.Limit-len(w.page.Msgs)))
	}
	if w.examined > w.lowest && (w.full() || spanned >= MaxSpan) {
		w.page.Next = w.examined
	}
	return w.page, nil
}

// readWindow returns the messages matching filter with sequences in
// [lo, hi], oldest first: one GetMsg per match, and one more that finds
// the first match past hi, or none.
func readWindow(ctx context.Context, s jetstream.Stream, filter string, lo, hi uint64) ([]*jetstream.RawStreamMsg, error) {
	var out []*jetstream.RawStreamMsg
	for seq := lo; seq <= hi; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("history: read %s from %d: %w", filter, seq, err)
		}
		if m.Sequence > hi {
			break
		}
		out = append(out, m)
		seq = m.Sequence + 1
	}
	return out, nil
}

// nextWindow sizes the next window from the last one: large enough to
// hold the need messages still wanted at the density just seen (plus a
// quarter), and at least twice the last, so that a sparse filter reaches
// the oldest match in a logarithmic number of windows.
func nextWindow(last, found, need uint64) uint64 {
	next := 2 * last
	if found > 0 {
		next = max(next, need*last/found+need/4+1)
	}
	return min(next, MaxSpan)
}
