package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// scanBuffer is how many messages a scan's consumer sends ahead of the
// one being handled: what a scan holds in memory at most.
const scanBuffer = 256

// scanIdle is how long a scan waits for the next message before it asks
// the server whether any is left.
const scanIdle = 2 * time.Second

// Range selects the messages of a stream that a scan reads.
type Range struct {
	// Filters are subject filters, any of which a message matches.
	Filters []string
	// From and To are the first and the last stream sequence read;
	// To zero means no upper bound.
	From, To uint64
}

// Scan calls fn with every message of stream that matches r, oldest
// first, until fn returns an error, the range ends, or no matching
// message is left. It reads through an ordered consumer, which the server
// streams to it a bounded window at a time and which survives a lost
// message or a reconnect by starting again after the last one handled; so
// a scan of millions of messages holds no more than scanBuffer of them at
// once. fn's error is returned as is.
func Scan(ctx context.Context, js jetstream.JetStream, stream string, r Range, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	if r.To != 0 && r.From > r.To {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: r.Filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(r.From, 1),
		// The consumer is deleted when the scan stops; should this
		// process die first, the server drops it soon.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("history: scan %s: %w", stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(scanBuffer))
	if err != nil {
		return fmt.Errorf("history: scan %s: %w", stream, err)
	}
	defer it.Stop()
	// A range with nothing in it ends here rather than after a wait.
	if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 {
		return nil
	}
	for {
		m, err := next(ctx, it)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// Nothing came for a while: done if nothing matching is left
			// to come.
			info, ierr := cons.Info(ctx)
			if ierr == nil && info.NumPending == 0 {
				return nil
			}
			continue // Pending, or the consumer is being recreated.
		case err != nil:
			return fmt.Errorf("history: scan %s: %w", stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("history: scan %s: %w", stream, err)
		}
		seq := meta.Sequence.Stream
		if r.To != 0 && seq > r.To {
			return nil
		}
		if err := fn(m, meta); err != nil {
			return err
		}
		if seq == r.To || meta.NumPending == 0 {
			return nil
		}
	}
}

// next waits up to scanIdle for the scan's next message.
func next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, scanIdle)
	defer cancel()
	return it.Next(jetstream.NextContext(ctx))
}
