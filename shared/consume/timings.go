package consume

import (
	"errors"
	"fmt"
	"time"
)

// Timings are the clocks of one consumer. Each service derives them from
// its settings in one place and validates them at start, so that an
// inconsistent set stops the service with one clear line instead of
// showing up later as duplicates or stalls.
type Timings struct {
	// AckWait is the consumer's AckWait: how long JetStream waits for a
	// sign of life from the worker holding a message before it delivers
	// the message again. The heartbeat keeps a live worker's message from
	// being redelivered, so AckWait only bounds how long the message of a
	// worker that died waits for its next delivery.
	AckWait time.Duration
	// Heartbeat spaces the InProgress calls while a handler runs.
	Heartbeat time.Duration
	// MessageTimeout bounds one handler call.
	MessageTimeout time.Duration
	// SettleTimeout bounds each call that settles a message: the double
	// ack, the dead-letter copy.
	SettleTimeout time.Duration
	// ShutdownGrace is how long in-flight handlers may run on once the
	// runner's context ends; then their contexts are cancelled.
	ShutdownGrace time.Duration
}

// Validate reports every way t cannot work, or nil. budget is the time
// the service allows its background work to stop in; the grace and the
// settling after it must fit in it.
func (t Timings) Validate(budget time.Duration) error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"AckWait", t.AckWait}, {"heartbeat", t.Heartbeat}, {"message timeout", t.MessageTimeout},
		{"settle timeout", t.SettleTimeout}, {"shutdown grace", t.ShutdownGrace},
	} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, is %s", f.name, f.d))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Two heartbeats may be lost (a NATS blip) before the server gives the
	// message to another worker.
	if t.Heartbeat*3 > t.AckWait {
		errs = append(errs, fmt.Errorf("heartbeat %s must be at most a third of AckWait %s", t.Heartbeat, t.AckWait))
	}
	// A settle call slower than AckWait races the redelivery it prevents.
	if t.SettleTimeout >= t.AckWait {
		errs = append(errs, fmt.Errorf("settle timeout %s must be shorter than AckWait %s", t.SettleTimeout, t.AckWait))
	}
	if budget > 0 && t.ShutdownGrace+t.SettleTimeout > budget {
		errs = append(errs, fmt.Errorf("shutdown grace %s plus settle timeout %s must fit in the shutdown budget %s",
			t.ShutdownGrace, t.SettleTimeout, budget))
	}
	return errors.Join(errs...)
}
