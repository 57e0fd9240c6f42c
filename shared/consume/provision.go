package consume

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureConsumer creates the durable consumer cfg on stream, or updates it
// when it exists. An existing consumer keeps where it starts (deliver
// policy, start sequence or time) and whether it is paused, which JetStream
// does not let an update change, so only the settings that may change are
// applied. A consumer that is created while resume is not 0 starts at that
// stream sequence instead of cfg's own start: it is one that vanished while
// a runner used it, and starting where it stood, rather than replaying the
// stream from cfg's start, keeps days of old events from going out again
// ahead of new ones. A resume point beyond the stream's end (the stream
// itself was recreated) falls back to cfg's start.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, resume uint64) (jetstream.Consumer, error) {
	for range 3 {
		cons, err := js.Consumer(ctx, stream, cfg.Durable)
		switch {
		case err == nil:
			old := cons.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
			if cfg.PauseUntil == nil {
				cfg.PauseUntil = old.PauseUntil
			}
			cons, err = js.UpdateConsumer(ctx, stream, cfg)
			if err != nil {
				return nil, fmt.Errorf("update consumer %s on %s: %w", cfg.Durable, stream, err)
			}
			return cons, nil
		case !errors.Is(err, jetstream.ErrConsumerNotFound):
			return nil, fmt.Errorf("look up consumer %s on %s: %w", cfg.Durable, stream, err)
		}
		create := cfg
		if resume > 0 {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return nil, fmt.Errorf("look up stream %s: %w", stream, err)
			}
			if st := s.CachedInfo().State; resume <= st.LastSeq+1 {
				create.DeliverPolicy, create.OptStartSeq, create.OptStartTime = jetstream.DeliverByStartSequencePolicy, resume, nil
			}
		}
		cons, err = js.CreateConsumer(ctx, stream, create)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			continue // Another replica was quicker: update that one.
		}
		if err != nil {
			return nil, fmt.Errorf("create consumer %s on %s: %w", cfg.Durable, stream, err)
		}
		return cons, nil
	}
	return nil, fmt.Errorf("consumer %s on %s keeps changing under us", cfg.Durable, stream)
}
