// Package logs builds the services' structured logger: JSON for machines by
// default, text for people in `make run`.
package logs

import (
	"io"
	"log/slog"
)

// New returns a logger writing format ("json" or "text") to w, tagged with
// the service name.
func New(format string, w io.Writer, service string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("service", service)
}
