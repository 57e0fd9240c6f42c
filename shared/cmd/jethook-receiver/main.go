// Command jethook-receiver is a small webhook receiver for trying jethook
// out: it verifies every webhook with shared/webhook, prints one line per
// event, drops duplicates by webhook-id, and answers with the status it is
// told to, so that a subscription to it can be made to fail, open its
// circuit breaker and recover.
//
//	jethook-receiver -addr 127.0.0.1:9000 -secret whsec_…
//
// Its answer can be changed while it runs: POST /status with a code in the
// body ("503", "410", "200"), from another terminal.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "jethook-receiver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("jethook-receiver", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9000", "listen address")
	secret := fs.String("secret", "", "the subscription's whsec_ secret(s), comma-separated (default $RECEIVER_SECRET)")
	status := fs.Int("status", http.StatusOK, "the status to answer webhooks with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		*secret = getenv("RECEIVER_SECRET")
	}
	secrets, err := webhook.ParseSecrets(*secret)
	if err != nil {
		return fmt.Errorf("-secret: %w", err)
	}
	r := &receiver{out: stdout, seen: map[string]bool{}}
	r.status.Store(int64(*status))
	mux := http.NewServeMux()
	mux.Handle("POST /", webhook.Verifier{Secrets: secrets}.Middleware(http.HandlerFunc(r.webhook)))
	mux.HandleFunc("POST /status", r.setStatus)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errs := make(chan error, 1)
	go func() { errs <- srv.ListenAndServe() }()
	fmt.Fprintf(stdout, "listening on http://%s, answering %d\n", *addr, *status)
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type receiver struct {
	out    io.Writer
	status atomic.Int64
	mu     sync.Mutex
	seen   map[string]bool
}

// webhook answers a verified webhook.
func (r *receiver) webhook(w http.ResponseWriter, req *http.Request) {
	msg, _ := webhook.FromContext(req.Context())
	status := int(r.status.Load())
	r.mu.Lock()
	dup := r.seen[msg.ID] && status < 300
	if status < 300 {
		r.seen[msg.ID] = true
	}
	r.mu.Unlock()
	what := "received"
	if dup {
		what = "duplicate"
	}
	fmt.Fprintf(r.out, "%s %s %s, answered %d: %s\n", time.Now().Format(time.TimeOnly), what, msg.ID, status, msg.Body)
	w.WriteHeader(status)
}

// setStatus changes the answer to later webhooks.
func (r *receiver) setStatus(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(req.Body, 16))
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 200 || n > 599 {
		http.Error(w, "want a status code between 200 and 599", http.StatusBadRequest)
		return
	}
	r.status.Store(int64(n))
	fmt.Fprintf(r.out, "now answering %d\n", n)
	w.WriteHeader(http.StatusNoContent)
}
