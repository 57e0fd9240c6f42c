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

	"github.com/jethook/jethook/shared/config"
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
			conn, err := Open("test", "TEST_ADDR", "127.0.0.1:0", config.NATS{NATSURL: ns.URL()}, logger)
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
	ln, err := Open("test", "TEST_ADDR", "127.0.0.1:0", config.NATS{NATSURL: "nats://127.0.0.1:1"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Listener.Close()
	defer ln.NC.Close()
	_, err = Open("test", "TEST_ADDR", ln.Listener.Addr().String(), config.NATS{NATSURL: "nats://127.0.0.1:1"}, logger)
	if err == nil || !strings.Contains(err.Error(), "TEST_ADDR="+ln.Listener.Addr().String()) {
		t.Fatalf("Open on a taken port = %v, want an error naming TEST_ADDR", err)
	}
}

// TestRunStopsWhenNATSRefusesTheCredentials: a service whose credentials
// the server refuses stops with the reason, instead of waiting forever
// for a connection that cannot come.
func TestRunStopsWhenNATSRefusesTheCredentials(t *testing.T) {
	ns := natstest.RunServer(t, natstest.WithUser("orders", "s3cret"))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := Open("test", "TEST_ADDR", "127.0.0.1:0", config.NATS{NATSURL: ns.URL(), NATSUser: "orders", NATSPassword: "wrong"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(AppConfig{Name: "test", Logger: logger, Registry: metrics.NewRegistry(), Ready: func(context.Context) error { return nil }})
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), logger, conn, app, func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "check NATS_USER/NATS_PASSWORD") || strings.Contains(err.Error(), "wrong") {
			t.Fatalf("Run = %v, want the refusal naming the variables, without the password", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run kept going with refused credentials")
	}
}
