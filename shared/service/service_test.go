package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natstest"
)

func TestRun(t *testing.T) {
	errBroken := errors.New("broken")
	tests := []struct {
		name string
		// worker is the background work; cancel says whether the test
		// ends the service by its context.
		worker  func(context.Context) error
		cancel  bool
		wantErr error
	}{
		{"stops cleanly when its context ends", func(ctx context.Context) error { <-ctx.Done(); return nil }, true, nil},
		{"a finished worker does not stop the service", func(context.Context) error { return nil }, true, nil},
		{"a failing worker stops the service", func(context.Context) error { return errBroken }, false, errBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.RunServer(t)
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			conn, err := Open("test", "TEST_ADDR", "127.0.0.1:0", ns.URL(), logger)
			if err != nil {
				t.Fatal(err)
			}
			app := NewApp(AppConfig{Name: "test", Logger: logger, Registry: metrics.NewRegistry(), Ready: func(context.Context) error { return nil }})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- Run(ctx, logger, conn, app, tt.worker) }()

			base := "http://" + conn.Listener.Addr().String()
			if tt.cancel {
				deadline := time.Now().Add(5 * time.Second)
				for {
					resp, err := http.Get(base + "/readyz")
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == 200 {
							break
						}
					}
					if time.Now().After(deadline) {
						t.Fatal("never ready")
					}
					time.Sleep(10 * time.Millisecond)
				}
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Run = %v, want %v", err, tt.wantErr)
				}
			case <-time.After(ShutdownTimeout + 2*time.Second):
				t.Fatal("Run did not return")
			}
			if _, err := http.Get(base + "/healthz"); err == nil {
				t.Fatal("still serving after Run returned")
			}
			if !conn.NC.IsClosed() {
				t.Fatal("NATS connection left open")
			}
		})
	}
}

func TestOpenNamesTheVariable(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := Open("test", "TEST_ADDR", "127.0.0.1:0", "nats://127.0.0.1:1", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Listener.Close()
	defer ln.NC.Close()
	_, err = Open("test", "TEST_ADDR", ln.Listener.Addr().String(), "nats://127.0.0.1:1", logger)
	if err == nil || !strings.Contains(err.Error(), "TEST_ADDR="+ln.Listener.Addr().String()) {
		t.Fatalf("Open on a taken port = %v, want an error naming TEST_ADDR", err)
	}
}
