//go:build natscli

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// This file checks what the README promises an operator: the real nats CLI
// (natscli v0.5.0) shows the streams, consumers, buckets and dead letters
// of a running system with the documented names and settings. It needs the
// CLI installed, so it only builds with -tags natscli; without the CLI it
// fails rather than skips, because a run with the tag asked for this check.

// natsCLIVersion is the version the README tells operators to install and
// whose JSON output these assertions were written against.
const natsCLIVersion = "v0.5.0"

// natsCLI runs the nats binary against one server, isolated from any
// context or credentials of the user running the tests.
type natsCLI struct {
	t    *testing.T
	path string
	url  string
	home string
}

func findNATSCLI(t *testing.T) *natsCLI {
	t.Helper()
	path, err := exec.LookPath("nats")
	if err != nil {
		path = installedNATSCLI()
	}
	if path == "" {
		t.Fatalf("the nats CLI is not installed (not on PATH, nor where go install puts it); "+
			"install it with: go install github.com/nats-io/natscli/nats@%s", natsCLIVersion)
	}
	c := &natsCLI{t: t, path: path, home: t.TempDir()}
	version := strings.TrimSpace(c.run("--version"))
	if version != natsCLIVersion {
		t.Logf("nats CLI %s at %s; these checks were written for %s", version, path, natsCLIVersion)
	}
	return c
}

// on returns the same CLI reporting to t, for use inside a subtest.
func (c *natsCLI) on(t *testing.T) *natsCLI {
	d := *c
	d.t = t
	return &d
}

// installedNATSCLI looks where `go install` puts binaries, $GOBIN or else
// $GOPATH/bin, which is often not on PATH. It returns "" when absent.
func installedNATSCLI() string {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return ""
	}
	// One line per variable, in order; an unset GOBIN is an empty line.
	lines := strings.Split(string(out), "\n")
	var dirs []string
	if gobin := strings.TrimSpace(lines[0]); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if len(lines) > 1 {
		for _, dir := range filepath.SplitList(strings.TrimSpace(lines[1])) {
			dirs = append(dirs, filepath.Join(dir, "bin"))
		}
	}
	for _, dir := range dirs {
		candidate := filepath.Join(dir, "nats")
		if _, err := os.Stat(candidate); err == nil {
			return candidate
		}
	}
	return ""
}

// run executes one CLI command and returns its standard output; a non-zero
// exit fails the test with the command's output.
func (c *natsCLI) run(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := []string{"--no-context", "--timeout", "5s"}
	if c.url != "" {
		full = append(full, "--server", c.url)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, c.path, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "XDG_CONFIG_HOME=" + c.home}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("nats %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// json runs a command with --json and decodes its output into v.
func (c *natsCLI) json(v any, args ...string) {
	c.t.Helper()
	out := c.run(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("nats %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// lines runs a command and returns its non-empty output lines.
func (c *natsCLI) lines(args ...string) []string {
	c.t.Helper()
	var out []string
	for _, l := range strings.Split(c.run(args...), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// The JSON the CLI prints is the JetStream API's: durations in
// nanoseconds, policies as lower-case words. Only the fields checked here
// are declared.
type cliStreamInfo struct {
	Config struct {
		Name        string   `json:"name"`
		Subjects    []string `json:"subjects"`
		Retention   string   `json:"retention"`
		Storage     string   `json:"storage"`
		MaxAge      int64    `json:"max_age"`
		Duplicates  int64    `json:"duplicate_window"`
		Replicas    int      `json:"num_replicas"`
		AllowMsgTTL bool     `json:"allow_msg_ttl"`
	} `json:"config"`
	State struct {
		Messages uint64 `json:"messages"`
	} `json:"state"`
}

type cliConsumerInfo struct {
	Config struct {
		Durable        string   `json:"durable_name"`
		AckPolicy      string   `json:"ack_policy"`
		AckWait        int64    `json:"ack_wait"`
		MaxDeliver     int      `json:"max_deliver"`
		FilterSubject  string   `json:"filter_subject"`
		FilterSubjects []string `json:"filter_subjects"`
	} `json:"config"`
	NumPending     uint64 `json:"num_pending"`
	NumAckPending  int    `json:"num_ack_pending"`
	NumRedelivered int    `json:"num_redelivered"`
}

type cliStoredMsg struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Header  []byte `json:"hdrs"`
	Data    []byte `json:"data"`
}

// TestNATSCLI: three orders and one message that is not an event go through
// the system; the nats CLI then shows every object with its documented
// configuration, the orders paid in KV, an empty work queue, nothing left
// pending, and one dead letter whose headers say why.
func TestNATSCLI(t *testing.T) {
	cli := findNATSCLI(t)
	s := startSystem(t, options{})
	cli.url = s.nats.URL()

	orders := []createdOrder{
		s.createOrder("natscli-1", "ada@example.com"),
		s.createOrder("", "grace@example.com"),
		s.createOrder("", "edsger@example.com"),
	}
	for _, o := range orders {
		s.waitEmail(o.OrderID, 20*time.Second)
	}
	cli.run("pub", "orders.paid.bogus", "not json")
	eventually(t, 20*time.Second, "the dead letter", func() bool {
		st, err := s.js.Stream(context.Background(), "DEADLETTER")
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	})
	s.settle(20 * time.Second)

	t.Run("streams", func(t *testing.T) {
		tests := []struct {
			name      string
			subjects  []string
			retention string
			messages  uint64
			maxAge    time.Duration
		}{
			{name: "ORDERS", subjects: []string{"orders.>"}, retention: "limits", messages: 4, maxAge: 7 * 24 * time.Hour},
			{name: "NOTIFICATIONS", subjects: []string{"notifications.>"}, retention: "workqueue", messages: 0},
			{name: "DEADLETTER", subjects: []string{"deadletter.>"}, retention: "limits", messages: 1, maxAge: 30 * 24 * time.Hour},
			{name: "DELIVERY_ATTEMPTS", subjects: []string{"attempts.>"}, retention: "limits", messages: 3, maxAge: 30 * 24 * time.Hour},
			{name: "REDELIVERIES", subjects: []string{"redeliver.>"}, retention: "workqueue", messages: 0},
			{name: "OPS", subjects: []string{"ops.>"}, retention: "limits", messages: 1, maxAge: 30 * 24 * time.Hour},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cli := cli.on(t)
				var info cliStreamInfo
				cli.json(&info, "stream", "info", tt.name)
				c := info.Config
				if !slices.Equal(c.Subjects, tt.subjects) || c.Retention != tt.retention || c.Storage != "file" || c.Replicas != 1 {
					t.Errorf("subjects %v, retention %q, storage %q, replicas %d; want %v, %q, \"file\", 1",
						c.Subjects, c.Retention, c.Storage, c.Replicas, tt.subjects, tt.retention)
				}
				if time.Duration(c.MaxAge) != tt.maxAge {
					t.Errorf("max_age %s, want %s", time.Duration(c.MaxAge), tt.maxAge)
				}
				if info.State.Messages != tt.messages {
					t.Errorf("messages %d, want %d", info.State.Messages, tt.messages)
				}
				if tt.name == "ORDERS" && time.Duration(c.Duplicates) != 2*time.Minute {
					t.Errorf("duplicate_window %s, want 2m", time.Duration(c.Duplicates))
				}
			})
		}
	})

	t.Run("consumers", func(t *testing.T) {
		tests := []struct {
			stream, name string
			filter       string
			ackWait      time.Duration
			maxDeliver   int
		}{
			// The harness sets HTTP_TIMEOUT=1s: AckWait is that plus 5 s.
			// MaxDeliver is unlimited: the dispatcher counts attempts itself
			// and dead-letters at MAX_DELIVER.
			{stream: "ORDERS", name: "wh-sub_notifier", filter: "orders.paid.>", ackWait: 6 * time.Second, maxDeliver: -1},
			{stream: "REDELIVERIES", name: "redeliver", ackWait: 6 * time.Second, maxDeliver: -1},
			{stream: "NOTIFICATIONS", name: "notifier-email", filter: "notifications.order-paid", maxDeliver: -1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cli := cli.on(t)
				var info cliConsumerInfo
				cli.json(&info, "consumer", "info", tt.stream, tt.name)
				c := info.Config
				filter := c.FilterSubject
				if len(c.FilterSubjects) == 1 {
					filter = c.FilterSubjects[0]
				}
				if c.Durable != tt.name || c.AckPolicy != "explicit" || filter != tt.filter || c.MaxDeliver != tt.maxDeliver {
					t.Errorf("durable %q, ack_policy %q, filter %q, max_deliver %d; want %q, \"explicit\", %q, %d",
						c.Durable, c.AckPolicy, filter, c.MaxDeliver, tt.name, tt.filter, tt.maxDeliver)
				}
				if tt.ackWait != 0 && time.Duration(c.AckWait) != tt.ackWait {
					t.Errorf("ack_wait %s, want %s", time.Duration(c.AckWait), tt.ackWait)
				}
				if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
					t.Errorf("num_pending %d, num_ack_pending %d, num_redelivered %d; want all 0",
						info.NumPending, info.NumAckPending, info.NumRedelivered)
				}
			})
		}
	})

	t.Run("one consumer per subscription", func(t *testing.T) {
		cli := cli.on(t)
		if got, want := cli.lines("consumer", "ls", "ORDERS", "--names"), []string{"wh-sub_notifier"}; !slices.Equal(got, want) {
			t.Fatalf("consumer ls ORDERS --names = %v, want %v", got, want)
		}
	})

	t.Run("buckets", func(t *testing.T) {
		cli := cli.on(t)
		if got, want := cli.lines("kv", "ls", "--names"), []string{"jobs", "notifier_processed", "orders", "orders_idempotency", "subscriptions"}; !slices.Equal(got, want) {
			t.Fatalf("kv ls --names = %v, want %v", got, want)
		}
		var ids, eventIDs []string
		for _, o := range orders {
			ids = append(ids, o.OrderID)
			eventIDs = append(eventIDs, o.EventID)
		}
		slices.Sort(ids)
		slices.Sort(eventIDs)
		if got := cli.lines("kv", "ls", "orders"); !slices.Equal(got, ids) {
			t.Errorf("kv ls orders = %v, want the order ids %v", got, ids)
		}
		if got := cli.lines("kv", "ls", "notifier_processed"); !slices.Equal(got, eventIDs) {
			t.Errorf("kv ls notifier_processed = %v, want the event ids %v", got, eventIDs)
		}
		if got := cli.lines("kv", "ls", "orders_idempotency"); len(got) != 1 {
			t.Errorf("kv ls orders_idempotency = %v, want the one Idempotency-Key that was sent", got)
		}
		for _, o := range orders {
			var stored struct {
				OrderID string `json:"order_id"`
				Status  string `json:"status"`
				EventID string `json:"event_id"`
			}
			raw := cli.run("kv", "get", "orders", o.OrderID, "--raw")
			if err := json.Unmarshal([]byte(raw), &stored); err != nil {
				t.Fatalf("kv get orders %s --raw: %v\n%s", o.OrderID, err, raw)
			}
			if stored.OrderID != o.OrderID || stored.Status != "paid" || stored.EventID != o.EventID {
				t.Errorf("kv get orders %s = %s; want status paid and event id %s", o.OrderID, raw, o.EventID)
			}
			if got := strings.TrimSpace(cli.run("kv", "get", "notifier_processed", o.EventID, "--raw")); got != "done" {
				t.Errorf("kv get notifier_processed %s = %q, want \"done\"", o.EventID, got)
			}
		}
		// The CLI's kv info has no JSON output; the bucket's backing stream
		// shows the per-key TTL support the idempotency record relies on.
		var processed cliStreamInfo
		cli.json(&processed, "stream", "info", "KV_notifier_processed")
		if !processed.Config.AllowMsgTTL || processed.Config.Storage != "file" {
			t.Errorf("KV_notifier_processed: allow_msg_ttl %v, storage %q; want true, \"file\"",
				processed.Config.AllowMsgTTL, processed.Config.Storage)
		}
	})

	t.Run("dead letter", func(t *testing.T) {
		cli := cli.on(t)
		var msg cliStoredMsg
		cli.json(&msg, "stream", "get", "DEADLETTER", "--last-for", "deadletter.sub_notifier.orders.paid.bogus")
		if msg.Subject != "deadletter.sub_notifier.orders.paid.bogus" || string(msg.Data) != "not json" {
			t.Fatalf("dead letter subject %q, body %q", msg.Subject, msg.Data)
		}
		hdr, err := nats.DecodeHeadersMsg(msg.Header)
		if err != nil {
			t.Fatalf("dead letter headers %q: %v", msg.Header, err)
		}
		want := map[string]string{
			"Jethook-Original-Subject":  "orders.paid.bogus",
			"Jethook-Original-Stream":   "ORDERS",
			"Jethook-Original-Sequence": "4",
			"Jethook-Subscription":      "sub_notifier",
		}
		for k, v := range want {
			if got := hdr.Get(k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		if hdr.Get("Jethook-Last-Error") == "" {
			t.Errorf("header Jethook-Last-Error is empty; headers: %v", hdr)
		}
	})
}
