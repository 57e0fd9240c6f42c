package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/jethook/jethook/shared/testkit"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/webhook"
)

// Shared test helpers, under the names these tests use.
var (
	freeAddr   = testkit.FreeAddr
	eventually = testkit.Eventually
)

type syncBuffer = testkit.SyncBuffer

// binDir holds the binaries TestMain builds once for all tests; rootDir is
// the workspace root.
var binDir, rootDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	gowork := strings.TrimSpace(string(out))
	if err != nil || gowork == "" || gowork == "off" {
		fmt.Fprintln(os.Stderr, "e2e: these tests need the jethook go.work workspace")
		return 1
	}
	dir, err := os.MkdirTemp("", "jethook-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
		"./orders/cmd/orders", "./dispatcher/cmd/dispatcher", "./notifier/cmd/notifier")
	build.Dir = filepath.Dir(gowork)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		return 1
	}
	binDir, rootDir = dir, filepath.Dir(gowork)
	return m.Run()
}

// proc is one service binary run as a child process. out has all its
// output; errOut has its standard error alone.
type proc struct {
	t      *testing.T
	name   string
	env    []string
	out    *syncBuffer
	errOut *syncBuffer
	cmd    *exec.Cmd
	done   chan error
}

func newProc(t *testing.T, name string, env map[string]string) *proc {
	p := &proc{t: t, name: name, out: &syncBuffer{}, errOut: &syncBuffer{}}
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	p.env = append(p.env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"))
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(filepath.Join(binDir, p.name))
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = p.out, io.MultiWriter(p.out, p.errOut)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan error, 1)
	p.done = done
	go func() { done <- p.cmd.Wait() }()
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// terminate sends SIGTERM and returns how the process exited.
func (p *proc) terminate(timeout time.Duration) (error, bool) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.cmd = nil
		return err, true
	case <-time.After(timeout):
		return nil, false
	}
}

func waitHTTP(t *testing.T, url string, want int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == want
	})
}

// proxy sits between the dispatchers and the notifiers and injects faults.
// With several notifiers it is their load balancer: it hands each webhook
// to the next one, and to the one after when that does not answer.
type proxy struct {
	addr    string
	targets []string
	next    atomic.Uint64
	mode    atomic.Int32
	srv     *http.Server

	mu       sync.Mutex
	attempts map[string][]time.Time
}

const (
	modePass           = iota // forward to the notifier
	mode503                   // answer 503 without forwarding
	mode500                   // answer 500 without forwarding
	modeForwardAndHang        // forward, then never answer the dispatcher
)

func newProxy(t *testing.T, targets ...string) *proxy {
	p := &proxy{addr: freeAddr(t), targets: targets, attempts: map[string][]time.Time{}}
	t.Cleanup(p.close)
	return p
}

// listen starts accepting; until then the dispatcher gets connection refused.
func (p *proxy) listen(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
}

func (p *proxy) close() {
	if p.srv != nil {
		_ = p.srv.Close()
	}
}

func (p *proxy) url() string { return "http://" + p.addr + "/webhook/order-paid" }

func (p *proxy) attemptsFor(id string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.attempts[id]...)
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	id := r.Header.Get(webhook.HeaderID)
	p.attempts[id] = append(p.attempts[id], time.Now())
	p.mu.Unlock()
	switch p.mode.Load() {
	case mode503:
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case mode500:
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	resp, err := p.forward(r.Header, body)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	if p.mode.Load() == modeForwardAndHang {
		<-r.Context().Done()
		return
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}

// forward posts the webhook to the targets in turn, starting with the next
// one, until one answers. A webhook a dying notifier may have taken can be
// posted to another: the notifiers drop duplicates.
func (p *proxy) forward(h http.Header, body []byte) (*http.Response, error) {
	first := p.next.Add(1)
	var lastErr error
	for i := range uint64(len(p.targets)) {
		req, _ := http.NewRequest(http.MethodPost, p.targets[(first+i)%uint64(len(p.targets))], bytes.NewReader(body))
		req.Header = h.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// system is the whole pipeline on 127.0.0.1.
type system struct {
	t       *testing.T
	nats    *natstest.Server  // the single node, or nil with a cluster
	cluster *natstest.Cluster // the three nodes, or nil with a single node
	mail    *smtptest.Server
	proxy   *proxy
	secret  string
	orders  *proc
	// dispatcher and notifier are the first of dispatchers and notifiers,
	// for the tests that run one of each.
	dispatcher, notifier   *proc
	dispatchers, notifiers []*proc
	ordersURL              string
	notifyURL              string // the first notifier's
	dispAddr               string // the first dispatcher's
	// readyURLs are every service's /readyz.
	readyURLs []string
	js        jetstream.JetStream
	// dispatcherEnv is the whole environment of the first dispatcher,
	// which further replicas start from.
	dispatcherEnv map[string]string
	// replicas are the dispatchers started after the first with
	// startReplica.
	replicas []*proc

	mu sync.Mutex
	// secrets are what no process may ever log, by what they are.
	secrets map[string]string
}

// adminEnv holds the dispatcher's settings for its admin API and SSRF
// guard, which have no default; every receiver here is on loopback.
var adminEnv = map[string]string{
	"ADMIN_TOKEN": "e2e-admin-token-0123456789abcdef0123", "SECRETS_KEY": "ZTJlIHNlY3JldHMga2V5IGZvciB0ZXN0cyBvbmx5ISE=",
	"ALLOWED_NETWORKS": "127.0.0.0/8",
}

type options struct {
	env           map[string]string // added to every service's environment
	dispatcherEnv map[string]string
	notifierEnv   map[string]string
	replicas      int  // processes of the dispatcher and of the notifier; 0 means 1
	proxyDown     bool // the proxy does not listen at first
	cluster       bool // three NATS nodes and STREAM_REPLICAS=3 instead of one node
	secureNATS    bool // one node that speaks only mutual TLS and wants a user and password
}

func startSystem(t *testing.T, o options) *system {
	t.Helper()
	secret, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s := &system{t: t, mail: smtptest.Start(t), secret: secret}
	natsURL, replicas := "", "1"
	var secure *secureNATS
	switch {
	case o.cluster:
		s.cluster = natstest.RunCluster(t, 3)
		natsURL, replicas = s.cluster.URLs(), "3"
	case o.secureNATS:
		secure = newSecureNATS(t)
		s.nats = natstest.RunServer(t, secure.serverOptions()...)
		natsURL = s.nats.URL()
	default:
		s.nats = natstest.RunServer(t)
		natsURL = s.nats.URL()
	}
	_, s.js = natstest.Connect(t, natsURL, secure.clientOptions()...)

	copies := max(o.replicas, 1)
	ordersAddr := freeAddr(t)
	s.ordersURL = "http://" + ordersAddr
	var notifierAddrs, dispAddrs, webhookURLs []string
	for range copies {
		n := freeAddr(t)
		notifierAddrs, dispAddrs = append(notifierAddrs, n), append(dispAddrs, freeAddr(t))
		webhookURLs = append(webhookURLs, "http://"+n+"/webhook/order-paid")
	}
	s.notifyURL, s.dispAddr = "http://"+notifierAddrs[0], dispAddrs[0]
	s.proxy = newProxy(t, webhookURLs...)
	if !o.proxyDown {
		s.proxy.listen(t)
	}
	common := func(extra map[string]string) map[string]string {
		env := map[string]string{"NATS_URL": natsURL, "STREAM_REPLICAS": replicas, "WEBHOOK_SECRET": secret, "LOG_FORMAT": "json"}
		for k, v := range secure.env() {
			env[k] = v
		}
		for k, v := range o.env {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	s.orders = newProc(t, "orders", common(map[string]string{"ORDERS_ADDR": ordersAddr}))
	s.readyURLs = []string{s.ordersURL + "/readyz"}
	for i := range copies {
		nenv := map[string]string{
			"NOTIFIER_ADDR": notifierAddrs[i], "SMTP_ADDR": s.mail.Addr,
			"EMAIL_RETRY_BASE": "100ms", "EMAIL_RETRY_MAX": "500ms",
		}
		maps.Copy(nenv, o.notifierEnv)
		denv := map[string]string{
			"DISPATCHER_ADDR": dispAddrs[i], "NOTIFICATION_WEBHOOK_URL": s.proxy.url(),
			"RETRY_BASE": "100ms", "RETRY_MAX": "500ms", "HTTP_TIMEOUT": "1s",
		}
		maps.Copy(denv, adminEnv)
		maps.Copy(denv, o.dispatcherEnv)
		denv = common(denv)
		if i == 0 {
			s.dispatcherEnv = denv
		}
		s.notifiers = append(s.notifiers, newProc(t, "notifier", common(nenv)))
		s.dispatchers = append(s.dispatchers, newProc(t, "dispatcher", denv))
		s.readyURLs = append(s.readyURLs, "http://"+notifierAddrs[i]+"/readyz", "http://"+dispAddrs[i]+"/readyz")
	}
	s.notifier, s.dispatcher = s.notifiers[0], s.dispatchers[0]
	for _, p := range s.procs() {
		p.start()
	}
	// Secrets never reach the logs: the webhook secret and, with secure
	// NATS, the NATS password are checked for on every process's whole
	// output once the test is over (cleanups run last-in, first-out, so
	// this runs after the processes were stopped and their output is
	// complete).
	s.secrets = map[string]string{"the webhook secret": strings.TrimPrefix(secret, "whsec_")}
	if secure != nil {
		s.secrets["the NATS password"] = secure.password
	}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range append(s.procs(), s.replicas...) {
			p.kill()
			for what, value := range s.secrets {
				if strings.Contains(p.out.String(), value) {
					t.Errorf("%s logged %s", p.name, what)
				}
			}
		}
	})
	s.waitReady()
	return s
}

// neverLogged adds a secret to those no process may log, such as a
// subscription's secret; what names it in the failure.
func (s *system) neverLogged(what, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[what] = strings.TrimPrefix(secret, "whsec_")
}

// startReplica starts one more dispatcher process on the same NATS, with
// the first one's settings, its own address and the given changes, and
// waits until it is ready. It returns the process and its address.
func (s *system) startReplica(change map[string]string) (*proc, string) {
	s.t.Helper()
	addr := freeAddr(s.t)
	env := maps.Clone(s.dispatcherEnv)
	maps.Copy(env, change)
	env["DISPATCHER_ADDR"] = addr
	p := newProc(s.t, "dispatcher", env)
	s.mu.Lock()
	s.replicas = append(s.replicas, p)
	s.mu.Unlock()
	p.start()
	waitHTTP(s.t, "http://"+addr+"/readyz", 200, 20*time.Second)
	return p, addr
}

// procs returns every service process: orders, then the notifiers and the
// dispatchers.
func (s *system) procs() []*proc {
	return append(append([]*proc{s.orders}, s.notifiers...), s.dispatchers...)
}

func (s *system) waitReady() {
	s.t.Helper()
	for _, url := range s.readyURLs {
		waitHTTP(s.t, url, 200, 20*time.Second)
	}
}

type createdOrder struct {
	OrderID       string `json:"order_id"`
	Status        string `json:"status"`
	EventID       string `json:"event_id"`
	CustomerEmail string `json:"customer_email"`
	AmountMinor   int64  `json:"amount_minor"`
	Currency      string `json:"currency"`
}

// createOrderRetrying posts an order like a careful client during an
// outage: it retries 503s and connection errors with the same
// Idempotency-Key until it gets its 201.
func (s *system) createOrderRetrying(key, email string) createdOrder {
	s.t.Helper()
	o, err := s.placeOrder(key, email)
	if err != nil {
		s.t.Fatal(err)
	}
	return o
}

// placeOrder is createOrderRetrying for goroutines other than the test's:
// it returns what went wrong instead of ending the test.
func (s *system) placeOrder(key, email string) (createdOrder, error) {
	body := fmt.Sprintf(`{"product_name":"Book","quantity":2,"price_per_item":10.50,"customer_email":%q}`, email)
	client := &http.Client{Timeout: 5 * time.Second}
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodPost, s.ordersURL+"/orders", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			var o createdOrder
			if err := json.Unmarshal(b, &o); err != nil {
				return o, fmt.Errorf("POST /orders: %w", err)
			}
			return o, nil
		case http.StatusServiceUnavailable:
			last = string(b)
			time.Sleep(100 * time.Millisecond)
		default:
			return createdOrder{}, fmt.Errorf("POST /orders = %d %s", resp.StatusCode, b)
		}
	}
	return createdOrder{}, fmt.Errorf("no 201 within 30 s; last answer: %s", last)
}

func (s *system) createOrder(key, email string) createdOrder {
	s.t.Helper()
	body := fmt.Sprintf(`{"product_name":"Book","quantity":2,"price_per_item":10.50,"customer_email":%q}`, email)
	req, _ := http.NewRequest(http.MethodPost, s.ordersURL+"/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		s.t.Fatalf("POST /orders = %d %s", resp.StatusCode, b)
	}
	var o createdOrder
	if err := json.Unmarshal(b, &o); err != nil {
		s.t.Fatal(err)
	}
	return o
}

// emailsFor returns the emails whose Subject names the order.
func (s *system) emailsFor(orderID string) []smtptest.Message {
	var out []smtptest.Message
	for _, m := range s.mail.Messages() {
		if strings.Contains(m.Header.Get("Subject"), orderID) {
			out = append(out, m)
		}
	}
	return out
}

func (s *system) waitEmail(orderID string, timeout time.Duration) smtptest.Message {
	s.t.Helper()
	eventually(s.t, timeout, "the email for order "+orderID, func() bool { return len(s.emailsFor(orderID)) > 0 })
	return s.emailsFor(orderID)[0]
}

// settle waits until nothing is pending anywhere: the consumers of ORDERS
// (whatever their names: one for the dispatchers, or one per subscription)
// have delivered and acked everything and the notification queue is empty.
// After that, no further email can appear for what was sent before.
func (s *system) settle(timeout time.Duration) {
	s.t.Helper()
	ctx := context.Background()
	eventually(s.t, timeout, "the pipeline to drain", func() bool {
		orders, err := s.js.Stream(ctx, "ORDERS")
		if err != nil {
			return false
		}
		consumers, n := orders.ListConsumers(ctx), 0
		for ci := range consumers.Info() {
			n++
			if ci.NumPending != 0 || ci.NumAckPending != 0 || ci.NumRedelivered != 0 {
				return false
			}
		}
		if consumers.Err() != nil || n == 0 {
			return false
		}
		st, err := s.js.Stream(ctx, "NOTIFICATIONS")
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}
