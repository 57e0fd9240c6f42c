package history_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/history"
	"github.com/jethook/jethook/shared/natstest"
)

func ctx(tb testing.TB) context.Context {
	tb.Helper()
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return c
}

// logStream is a stream "LOG" on log.> of a fresh server.
func logStream(tb testing.TB) (jetstream.JetStream, jetstream.Stream) {
	tb.Helper()
	srv := natstest.RunServer(tb)
	_, js := natstest.Connect(tb, srv.URL())
	s, err := js.CreateStream(ctx(tb), jetstream.StreamConfig{Name: "LOG", Subjects: []string{"log.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		tb.Fatal(err)
	}
	return js, s
}

// publish puts one message on each subject, in order, with its index as
// body, and returns their sequences.
func publish(tb testing.TB, js jetstream.JetStream, subjects []string) []uint64 {
	tb.Helper()
	seqs := make([]uint64, 0, len(subjects))
	const window = 1000 // publishes awaiting their PubAck
	for start := 0; start < len(subjects); start += window {
		var futures []jetstream.PubAckFuture
		for i := start; i < min(start+window, len(subjects)); i++ {
			f, err := js.PublishAsync(subjects[i], []byte(strconv.Itoa(i)))
			if err != nil {
				tb.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				seqs = append(seqs, ack.Sequence)
			case err := <-f.Err():
				tb.Fatal(err)
			case <-time.After(30 * time.Second):
				tb.Fatal("no PubAck")
			}
		}
	}
	return seqs
}

// all pages through filter with limit and returns every sequence seen,
// how many pages it took, and whether the last one was empty.
func all(t *testing.T, s jetstream.Stream, q history.Query) ([]uint64, int, bool) {
	t.Helper()
	var seqs []uint64
	for pages := 1; ; pages++ {
		p, err := history.Newest(ctx(t), s, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Msgs) > q.Limit {
			t.Fatalf("page of %d with limit %d", len(p.Msgs), q.Limit)
		}
		for _, m := range p.Msgs {
			seqs = append(seqs, m.Sequence)
		}
		if p.Next == 0 {
			return seqs, pages, len(p.Msgs) == 0
		}
		if pages > 10_000 {
			t.Fatal("the pages never end")
		}
		q.Before = p.Next
	}
}

func newestFirst(subjects []string, seqs []uint64, match func(string) bool) []uint64 {
	var want []uint64
	for i := len(subjects) - 1; i >= 0; i-- {
		if match(subjects[i]) {
			want = append(want, seqs[i])
		}
	}
	return want
}

// TestNewestPagesEveryMatchOnce: whatever the density of the filter, the
// pages hold every match once, newest first, each one full but the last.
// A filter ending in ">" may need one more, empty page to learn that
// nothing older is left (when its last full page ends above the stream's
// first message); one without ">" never does.
func TestNewestPagesEveryMatchOnce(t *testing.T) {
	js, s := logStream(t)
	// 3000 messages: every one on log.dense.*, every 10th also on
	// log.tenth.*, and three on log.rare, far apart.
	var subjects []string
	for i := range 3000 {
		switch {
		case i == 5 || i == 1500 || i == 2990:
			subjects = append(subjects, "log.rare.x")
		case i%10 == 0:
			subjects = append(subjects, fmt.Sprintf("log.tenth.%d", i))
		default:
			subjects = append(subjects, fmt.Sprintf("log.dense.%d", i))
		}
	}
	seqs := publish(t, js, subjects)
	prefix := func(p string) func(string) bool {
		return func(s string) bool { return len(s) >= len(p) && s[:len(p)] == p }
	}
	tests := []struct {
		filter string
		match  func(string) bool
		limit  int
	}{
		{"log.>", prefix("log."), 50},
		{"log.tenth.>", prefix("log.tenth."), 50},
		{"log.>", prefix("log."), 500},
		{"log.dense.>", prefix("log.dense."), 7},
		{"log.tenth.*", prefix("log.tenth."), 50},
		{"log.tenth.*", prefix("log.tenth."), 1},
		{"log.rare.x", prefix("log.rare."), 2},
		{"log.rare.*", prefix("log.rare."), 50},
		{"log.*.x", prefix("log.rare."), 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/limit %d", tt.filter, tt.limit), func(t *testing.T) {
			want := newestFirst(subjects, seqs, tt.match)
			got, pages, lastEmpty := all(t, s, history.Query{Filter: tt.filter, Limit: tt.limit})
			if !slices.Equal(got, want) {
				t.Fatalf("got %d sequences %v…, want %d %v…", len(got), head(got), len(want), head(want))
			}
			wantPages := max(1, (len(want)+tt.limit-1)/tt.limit)
			broad := strings.HasSuffix(tt.filter, ">")
			if pages != wantPages && !(broad && lastEmpty && pages == wantPages+1) {
				t.Fatalf("%d pages (last empty: %v), want %d: a page came back short", pages, lastEmpty, wantPages)
			}
		})
	}
	t.Run("no match", func(t *testing.T) {
		p, err := history.Newest(ctx(t), s, history.Query{Filter: "log.none.>", Limit: 10})
		if err != nil || len(p.Msgs) != 0 || p.Next != 0 {
			t.Fatalf("Newest = %+v, %v", p, err)
		}
	})
	t.Run("before the oldest match", func(t *testing.T) {
		p, err := history.Newest(ctx(t), s, history.Query{Filter: "log.rare.x", Limit: 10, Before: seqs[5]})
		if err != nil || len(p.Msgs) != 0 || p.Next != 0 {
			t.Fatalf("Newest = %+v, %v", p, err)
		}
	})
	t.Run("a cursor past the end", func(t *testing.T) {
		p, err := history.Newest(ctx(t), s, history.Query{Filter: "log.rare.x", Limit: 10, Before: 1 << 40})
		if err != nil || len(p.Msgs) != 3 {
			t.Fatalf("Newest = %d messages, %v", len(p.Msgs), err)
		}
	})
	t.Run("limit 0", func(t *testing.T) {
		if _, err := history.Newest(ctx(t), s, history.Query{Filter: "log.>"}); err == nil {
			t.Fatal("limit 0 accepted")
		}
	})
}

func head(s []uint64) []uint64 { return s[:min(len(s), 8)] }

// TestNewestKeepAndGaps: with Keep, pages may come back short (the scan
// per page is bounded) but together they hold exactly what Keep accepts;
// deleted messages and new ones published between pages change nothing.
func TestNewestKeepAndGaps(t *testing.T) {
	js, s := logStream(t)
	var subjects []string
	for i := range 1000 {
		subjects = append(subjects, fmt.Sprintf("log.a.%d", i))
	}
	seqs := publish(t, js, subjects)
	// Delete every 7th message: GetMsg skips the holes.
	deleted := map[uint64]bool{}
	for i := 0; i < len(seqs); i += 7 {
		if err := s.DeleteMsg(ctx(t), seqs[i]); err != nil {
			t.Fatal(err)
		}
		deleted[seqs[i]] = true
	}
	// Keep the bodies divisible by 97: ten of them survive the deletes.
	keep := func(m *jetstream.RawStreamMsg) bool {
		n, _ := strconv.Atoi(string(m.Data))
		return n%97 == 0
	}
	var want []uint64
	for i := len(seqs) - 1; i >= 0; i-- {
		if i%97 == 0 && !deleted[seqs[i]] {
			want = append(want, seqs[i])
		}
	}
	q := history.Query{Filter: "log.a.>", Limit: 3, Keep: keep, MaxScan: 100}
	var got []uint64
	for pages := 0; ; pages++ {
		p, err := history.Newest(ctx(t), s, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range p.Msgs {
			got = append(got, m.Sequence)
		}
		if pages == 0 {
			// Newer messages arrive after the first page: the cursor
			// still leads on into the older ones.
			publish(t, js, []string{"log.a.new", "log.a.new"})
		}
		if p.Next == 0 {
			break
		}
		if pages > 100 {
			t.Fatal("the pages never end")
		}
		q.Before = p.Next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}

// TestScan: a scan reads the range oldest first, only what matches its
// filters, stops at To or when nothing is left, and passes fn's error on.
func TestScan(t *testing.T) {
	js, s := logStream(t)
	var subjects []string
	for i := range 600 {
		subjects = append(subjects, []string{"log.a.x", "log.b.x", "log.c.x"}[i%3])
	}
	seqs := publish(t, js, subjects)
	collect := func(r history.Range) []uint64 {
		t.Helper()
		var got []uint64
		err := history.Scan(ctx(t), js, "LOG", r, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
			if m.Subject() != subjects[meta.Sequence.Stream-1] {
				t.Fatalf("message %d on %s", meta.Sequence.Stream, m.Subject())
			}
			got = append(got, meta.Sequence.Stream)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := func(from, to uint64, subj ...string) []uint64 {
		var out []uint64
		for i, seq := range seqs {
			if seq >= from && (to == 0 || seq <= to) && slices.Contains(subj, subjects[i]) {
				out = append(out, seq)
			}
		}
		return out
	}
	if got, w := collect(history.Range{Filters: []string{"log.a.x", "log.c.x"}, From: 1}), want(1, 0, "log.a.x", "log.c.x"); !slices.Equal(got, w) {
		t.Fatalf("two filters: %d messages, want %d", len(got), len(w))
	}
	if got, w := collect(history.Range{Filters: []string{"log.b.*"}, From: 100, To: 400}), want(100, 400, "log.b.x"); !slices.Equal(got, w) {
		t.Fatalf("a range: got %v…, want %v…", head(got), head(w))
	}
	if got := collect(history.Range{Filters: []string{"log.none"}, From: 1}); len(got) != 0 {
		t.Fatalf("no match: %v", got)
	}
	if got := collect(history.Range{Filters: []string{"log.>"}, From: 500, To: 400}); len(got) != 0 {
		t.Fatalf("From after To: %v", got)
	}
	stop := errors.New("enough")
	n := 0
	err := history.Scan(ctx(t), js, "LOG", history.Range{Filters: []string{"log.>"}, From: 1}, func(jetstream.Msg, *jetstream.MsgMetadata) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Fatalf("Scan = %v after %d messages, want fn's error after 10", err, n)
	}
	_ = s
}
