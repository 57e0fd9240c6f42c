// Command jethook-dev runs the whole system on one machine for development:
// an embedded JetStream nats-server (data kept in ./.data across restarts)
// and the orders, dispatcher and notifier binaries as separate processes.
// Ctrl-C stops them all cleanly. It is what `make run` starts.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// devSecret signs webhooks in development only. It is fixed so that events
// signed before a restart still verify after it; production has no default.
const devSecret = "whsec_amV0aG9vay1kZXYtc2VjcmV0LW5vdC1mb3ItcHJvZHVjdGlvbg=="

// devAdminToken and devSecretsKey are the dispatcher's admin token and
// secrets key in development only, fixed so that subscriptions created
// before a restart stay readable after it.
const (
	devAdminToken = "jethook-dev-admin-token-not-for-production"
	devSecretsKey = "amV0aG9vayBkZXYgc2VjcmV0cyBrZXksIG5vdCA0IHU="
)

var services = []string{"orders", "dispatcher", "notifier"}

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "jethook-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	dataDir := envOr(getenv, "DEV_DATA_DIR", ".data")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	binDir := filepath.Dir(exe)
	for _, s := range services {
		if _, err := os.Stat(filepath.Join(binDir, s)); err != nil {
			return fmt.Errorf("service binary %s not found next to jethook-dev (run `make run`, which builds them): %w", s, err)
		}
	}

	ns, err := server.NewServer(&server.Options{
		ServerName: "jethook-dev",
		Host:       "127.0.0.1",
		Port:       4222,
		HTTPHost:   "127.0.0.1",
		HTTPPort:   8222,
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		NoSigs:     true,
	})
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("nats-server did not start on 127.0.0.1:4222 (is another one running?)")
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		fmt.Fprintln(stdout, "jethook-dev: nats-server stopped; data kept in", dataDir)
	}()

	env := append(os.Environ(),
		"NATS_URL=nats://127.0.0.1:4222",
		"LOG_FORMAT="+envOr(getenv, "LOG_FORMAT", "text"),
		"WEBHOOK_SECRET="+envOr(getenv, "WEBHOOK_SECRET", devSecret),
		"ADMIN_TOKEN="+envOr(getenv, "ADMIN_TOKEN", devAdminToken),
		"SECRETS_KEY="+envOr(getenv, "SECRETS_KEY", devSecretsKey),
		// Every service runs on 127.0.0.1, the notifier too: open loopback
		// to the SSRF guard.
		"ALLOWED_NETWORKS="+envOr(getenv, "ALLOWED_NETWORKS", "127.0.0.0/8"),
	)
	out := &lineWriter{w: stdout}
	exited := make(chan string, len(services))
	var procs []*proc
	for _, s := range services {
		cmd := exec.Command(filepath.Join(binDir, s))
		cmd.Env = env
		cmd.Stdout = out.prefixed(s)
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			stopAll(procs, stdout)
			return fmt.Errorf("start %s: %w", s, err)
		}
		p := &proc{name: s, cmd: cmd, done: make(chan struct{})}
		procs = append(procs, p)
		go func() {
			_ = cmd.Wait()
			close(p.done)
			exited <- p.name
		}()
	}

	fmt.Fprint(stdout, `
jethook is running (Ctrl-C stops everything):
  orders API      http://127.0.0.1:8080   (POST /orders, GET /orders/{id})
  notifier        http://127.0.0.1:8081   (POST /webhook/order-paid)
  dispatcher      http://127.0.0.1:8082   (health)
  nats            nats://127.0.0.1:4222   monitoring http://127.0.0.1:8222
Try:
  curl -i -X POST http://127.0.0.1:8080/orders -H 'Content-Type: application/json' \
    -d '{"product_name":"Book","quantity":2,"price_per_item":10.50,"customer_email":"ada@example.com"}'

`)
	var err2 error
	select {
	case <-ctx.Done():
	case name := <-exited:
		err2 = fmt.Errorf("%s exited unexpectedly; stopping everything", name)
	}
	stopAll(procs, stdout)
	return err2
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// stopAll sends SIGTERM to every process we started, waits up to 12 s for
// each, then kills what is left.
func stopAll(procs []*proc, stdout io.Writer) {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(12 * time.Second):
			fmt.Fprintf(stdout, "jethook-dev: %s did not stop in time; killing pid %d\n", p.name, p.cmd.Process.Pid)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// lineWriter interleaves the services' output line by line, each line
// prefixed with its service's name.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) prefixed(name string) io.Writer {
	return &prefixWriter{l: l, prefix: fmt.Sprintf("%-10s | ", name)}
}

type prefixWriter struct {
	l      *lineWriter
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.l.mu.Lock()
		_, err := fmt.Fprintf(p.l.w, "%s%s\n", p.prefix, p.buf[:i])
		p.l.mu.Unlock()
		if err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
