package history_test

import (
	"fmt"
	"testing"

	"github.com/jethook/jethook/dispatcher/internal/history"
)

// BenchmarkNewest measures one page of 50 at the newest end and deep in a
// stream of 100,000 messages spread over 100 subscriptions, for filters
// that match every message, one in 100, and 3 of them.
func BenchmarkNewest(b *testing.B) {
	js, s := logStream(b)
	const n = 100_000
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("log.s%d.e%d", i%100, i)
	}
	subjects[10], subjects[50_000], subjects[99_990] = "log.rare.e", "log.rare.e", "log.rare.e"
	seqs := publish(b, js, subjects)
	for _, bb := range []struct {
		name   string
		filter string
		before uint64
	}{
		{"every message, first page", "log.>", 0},
		{"every message, deep", "log.>", seqs[n/2]},
		{"1 in 100, first page", "log.s7.>", 0},
		{"1 in 100, deep", "log.s7.>", seqs[n/2]},
		{"3 in 100000", "log.rare.*", 0},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				p, err := history.Newest(ctx(b), s, history.Query{Filter: bb.filter, Before: bb.before, Limit: 50})
				if err != nil || len(p.Msgs) == 0 {
					b.Fatal(len(p.Msgs), err)
				}
			}
		})
	}
}
