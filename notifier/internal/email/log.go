package email

import (
	"context"
	"log/slog"
)

var _ Sender = LogSender{}

// LogSender writes a line instead of sending, for running the system
// without a mail server.
type LogSender struct {
	Logger *slog.Logger
}

// Send logs that m would be sent now.
func (s LogSender) Send(ctx context.Context, m Message, commit Commit) error {
	// A log line has no answer to wait for.
	if err := commit(ctx, 0); err != nil {
		return &SendError{Stage: StageCommit, Err: err}
	}
	s.Logger.InfoContext(ctx, "Sending confirmation email to "+m.To+" for order "+m.OrderID,
		"event_id", m.EventID, "order_id", m.OrderID)
	return nil
}
