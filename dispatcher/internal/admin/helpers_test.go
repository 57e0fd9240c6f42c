package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/admin"
	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/deadletter"
	"github.com/jethook/jethook/dispatcher/internal/jobs"
	"github.com/jethook/jethook/dispatcher/internal/ping"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/ssrf"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/problem"
	"github.com/jethook/jethook/shared/service"
	"github.com/jethook/jethook/shared/testkit"
)

const token = "admin-token-for-tests-0123456789abcdef"

// api is the admin API on a real HTTP server on 127.0.0.1, over a real
// registry on an in-process nats-server.
type api struct {
	t       *testing.T
	addr    string
	env     *platformtest.Env
	js      jetstream.JetStream
	reg     *registry.Registry
	jobs    *jobs.Manager
	logs    *testkit.SyncBuffer
	mu      sync.Mutex
	changes []registry.Entry // what StatusChanged was told
}

func startAPI(t *testing.T) *api { return start(t, true) }

// startUnprovisioned is startAPI before the registry could provision its
// bucket.
func startUnprovisioned(t *testing.T) *api { return start(t, false) }

func start(t *testing.T, provision bool) *api {
	t.Helper()
	var env *platformtest.Env
	if provision {
		env = platformtest.Start(t)
	} else {
		srv := natstest.RunServer(t)
		nc, js := natstest.Connect(t, srv.URL())
		env = &platformtest.Env{Server: srv, NC: nc, JS: js}
	}
	js := env.JS
	a := &api{t: t, env: env, js: js, logs: &testkit.SyncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg, err := registry.New(js, [32]byte{7: 7}, 1, logger, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if provision {
		if err := reg.Provision(c); err != nil {
			t.Fatal(err)
		}
	}
	a.reg = reg
	a.jobs = jobs.New(js, reg, logger, jobs.Options{})
	runJobs, stopJobs := context.WithCancel(context.Background())
	jobsDone := make(chan struct{})
	go func() { defer close(jobsDone); _ = a.jobs.Run(runJobs) }()
	t.Cleanup(func() { stopJobs(); <-jobsDone })
	// Literal addresses of the documentation ranges stay refused; names
	// are used as targets, and only 127.0.0.1 is ever dialled.
	guard := ssrf.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})

	app := service.NewApp(service.AppConfig{Name: "dispatcher", Logger: logger, Registry: metrics.NewRegistry(), BodyLimit: admin.MaxBodyBytes})
	admin.Register(app, admin.Deps{
		Token: token, Registry: reg, Logger: logger, URLs: guard,
		Attempts:    attempt.Reader{JS: js},
		DeadLetters: deadletter.New(js, logger),
		Jobs:        a.jobs,
		Pinger: &ping.Pinger{Client: guard.Client(5*time.Second, 2), Attempts: attempt.NewLog(js, logger),
			UserAgent: "jethook/test", Logger: logger},
		StatusChanged: func(_ context.Context, e registry.Entry) {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.changes = append(a.changes, e)
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- logs ----\n%s", a.logs.String())
		}
	})
	return a
}

// request is one HTTP request, written raw so that tests control every
// header (or its absence) and can send bodies the server refuses to read.
type request struct {
	method, path string
	header       map[string]string // "" value: header left out
	body         string
	noAuth       bool // send no Authorization header
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends req and reads the answer while still writing, as a client does
// when the server answers a huge body with 413 and closes.
func (a *api) do(req request) response {
	a.t.Helper()
	conn, err := net.Dial("tcp", a.addr)
	if err != nil {
		a.t.Fatal(err)
	}
	defer conn.Close()
	h := map[string]string{"Host": "test", "Content-Length": fmt.Sprint(len(req.body)), "Connection": "close"}
	if !req.noAuth {
		h["Authorization"] = "Bearer " + token
	}
	if req.body != "" {
		h["Content-Type"] = "application/json"
	}
	for k, v := range req.header {
		h[k] = v
	}
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\n", req.method, req.path)
	for k, v := range h {
		if v != "" {
			fmt.Fprintf(&head, "%s: %s\r\n", k, v)
		}
	}
	head.WriteString("\r\n")
	go func() {
		_, _ = io.WriteString(conn, head.String())
		_, _ = io.WriteString(conn, req.body)
	}()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		a.t.Fatalf("%s %s: reading the answer: %v", req.method, req.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// lastSeq is the last sequence of the bucket's stream: any write to the
// registry moves it.
func (a *api) lastSeq() uint64 {
	a.t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := a.js.Stream(c, "KV_"+natsx.BucketSubscriptions)
	if err != nil {
		a.t.Fatal(err)
	}
	info, err := st.Info(c)
	if err != nil {
		a.t.Fatal(err)
	}
	return info.State.LastSeq
}

func decodeProblem(t *testing.T, r response) problem.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("Content-Type %q, want %s; body %s", ct, problem.ContentType, r.body)
	}
	var p problem.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Status != r.status || p.Title == "" {
		t.Fatalf("problem %+v for status %d", p, r.status)
	}
	return p
}

// subscriptionView is an answer's subscription, with any secret it shows.
type subscriptionView struct {
	ID             string            `json:"id"`
	URL            string            `json:"url"`
	EventTypes     []string          `json:"event_types"`
	Description    string            `json:"description"`
	Status         string            `json:"status"`
	DisabledReason *string           `json:"disabled_reason"`
	RateLimitPerS  int               `json:"rate_limit_per_s"`
	MaxInFlight    int               `json:"max_in_flight"`
	Metadata       map[string]string `json:"metadata"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
	Secret         *string           `json:"secret"`
}

func decode[T any](t *testing.T, r response, status int) T {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return v
}

// create makes a subscription through the API and returns it with its
// ETag.
func (a *api) create(body string) (subscriptionView, string) {
	a.t.Helper()
	r := a.do(request{method: "POST", path: "/v1/subscriptions", body: body})
	return decode[subscriptionView](a.t, r, 201), r.header.Get("ETag")
}
