package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/webhook"

	"github.com/jethook/jethook/shared/testkit"
)

// smtpTimeout is the notifier's SMTP_TIMEOUT: short, so that a mail server
// that does not answer a command costs each attempt little.
const smtpTimeout = 2 * time.Second

// smtpDataTimeout is the notifier's SMTP_DATA_TIMEOUT, how long it waits for
// the answer to a message's final ".": far longer than any slow or stalled
// answer of the schedule, so that the notifier never gives up on a message
// the relay then accepts, yet short enough that a notifier killed while it
// waited leaves a claim that lapses within the drain (its lease is at most
// SMTP_DATA_TIMEOUT + 1 min from the dot).
const smtpDataTimeout = 20 * time.Second

// replicas is how many processes of the dispatcher and of the notifier run
// side by side, sharing their consumers.
const replicas = 2

// The retry settings of the services under test: fast, so that a run
// recovers from each fault within seconds, and with so many attempts that
// no fault of the schedule can exhaust them.
var (
	dispatcherSettings = map[string]string{
		"RETRY_BASE":   "100ms",
		"RETRY_MAX":    "2s",
		"MAX_DELIVER":  "500",
		"HTTP_TIMEOUT": "1s",
		// The circuit breaker opens after its 10 failures in a row, as by
		// default, during every webhook fault; its pauses are as short
		// as the retries, so that it is exercised without stopping the
		// deliveries for half a minute at a time.
		"BREAKER_COOLOFF":     "1s",
		"BREAKER_COOLOFF_MAX": "2s",
	}
	notifierSettings = map[string]string{
		"SMTP_TIMEOUT":       smtpTimeout.String(),
		"SMTP_DATA_TIMEOUT":  smtpDataTimeout.String(),
		"EMAIL_RETRY_BASE":   "100ms",
		"EMAIL_RETRY_MAX":    "1s",
		"EMAIL_MAX_ATTEMPTS": "500",
	}
	ordersSettings = map[string]string{
		// Shorter than the client's timeout, so the service answers 503
		// before the client gives up.
		"PUBLISH_TIMEOUT": "2s",
	}
)

// Bounds of the harness's own waits.
const (
	readyTimeout = 30 * time.Second
	// resolveTimeout bounds the retries of orders still waiting for their
	// 201 when the load stops.
	resolveTimeout = 30 * time.Second
	// killTimeout bounds the wait for a process to die after SIGKILL.
	killTimeout = 5 * time.Second
	// termTimeout bounds a graceful stop: the services promise 10 s.
	termTimeout = 15 * time.Second
	// progressEvery spaces the progress lines.
	progressEvery = 5 * time.Second
)

// logger writes the harness's progress lines.
type logger struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time // of the load; zero before it
}

func (l *logger) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prefix := "chaos: "
	if !l.start.IsZero() {
		prefix = fmt.Sprintf("chaos: t=%6.2fs ", time.Since(l.start).Seconds())
	}
	fmt.Fprintf(l.out, prefix+format+"\n", args...)
}

func (l *logger) markStart(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.start = t
}

// harness is one run: the processes, the in-process mail server and proxy,
// the load, and what was observed.
type harness struct {
	cfg Config
	dir string
	log *logger
	res *Result

	mail  *smtptest.Server
	proxy *proxy
	nc    *nats.Conn
	js    jetstream.JetStream

	nats, orders           *proc
	dispatchers, notifiers []*proc
	// byTarget finds the process a fault hits.
	byTarget map[string]*proc
	// baseURLs are the services' HTTP addresses, for their readiness;
	// dispatcherURLs the dispatchers', for the admin API.
	baseURLs       []string
	dispatcherURLs []string
	ordersURL      string

	// slowGuard keeps notifier stops and slow-relay windows apart while
	// they run, as the plan keeps them apart on paper (see exclusive): a
	// stop holds it shared, a slow window exclusively, until its last slow
	// answer is in. A stop that a slow window would overlap, because the
	// fault before it ran late, waits for it instead.
	slowGuard sync.RWMutex

	mu sync.Mutex // guards res and refused while faults and the supervisor run
	// refused holds the addresses the relay refused with 550.
	refused map[string]bool
}

func (h *harness) procs() []*proc {
	return append([]*proc{h.nats}, h.services()...)
}

func (h *harness) services() []*proc {
	return append(append([]*proc{h.orders}, h.dispatchers...), h.notifiers...)
}

func (h *harness) run(ctx context.Context, plan []Fault) error {
	defer h.teardown()
	if err := h.setup(ctx); err != nil {
		return err
	}
	superCtx, stopSuper := context.WithCancel(ctx)
	superDone := make(chan struct{})
	go func() {
		defer close(superDone)
		h.supervise(superCtx)
	}()
	defer func() {
		stopSuper()
		<-superDone
	}()

	if err := h.waitReady(ctx, "start-up"); err != nil {
		return err
	}
	start := time.Now()
	h.log.markStart(start)
	h.log.printf("load starts: %g orders/s for %s", h.cfg.Rate, h.cfg.Duration)

	loadCtx, stopLoad := context.WithDeadline(ctx, start.Add(h.cfg.Duration))
	defer stopLoad()
	resolveCtx, stopResolve := context.WithDeadline(ctx, start.Add(h.cfg.Duration+resolveTimeout))
	defer stopResolve()
	gen := newLoadGen(h.ordersURL, h.cfg.Seed, h.cfg.Rate)

	var wg sync.WaitGroup
	wg.Go(func() { gen.run(loadCtx, resolveCtx) })
	wg.Go(func() { h.inject(loadCtx, start, plan) })
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		h.progress(loadCtx, gen, len(plan))
	}()
	<-loadCtx.Done()
	<-progressDone
	h.log.printf("load stops; waiting up to %s for orders still without a 201", resolveTimeout)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	st := gen.stats()
	h.log.printf("load done: orders=%d acked=%d rejected=%d skipped=%d", st.created, st.acked, st.rejected, gen.skips.Load())

	if err := h.waitReady(ctx, "the faults"); err != nil {
		return err
	}
	return h.drainAndCheck(ctx, gen)
}

// setup builds the binaries and starts everything.
func (h *harness) setup(ctx context.Context) error {
	binDir := h.cfg.BinDir
	if binDir == "" {
		binDir = filepath.Join(h.dir, "bin")
		h.log.printf("building orders, dispatcher, notifier and nats-server into %s", binDir)
		began := time.Now()
		if err := build(ctx, binDir); err != nil {
			return err
		}
		h.log.printf("built in %s", time.Since(began).Round(100*time.Millisecond))
	}
	logDir := filepath.Join(h.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	var err error
	if h.mail, err = smtptest.Listen("127.0.0.1:0"); err != nil {
		return err
	}
	ports, err := freePorts(2 + 2*replicas)
	if err != nil {
		return err
	}
	natsURL := "nats://127.0.0.1:" + ports[0]
	ordersAddr := "127.0.0.1:" + ports[1]
	var notifierAddrs, dispAddrs, webhookURLs []string
	for i := range replicas {
		notifierAddrs = append(notifierAddrs, "127.0.0.1:"+ports[2+i])
		dispAddrs = append(dispAddrs, "127.0.0.1:"+ports[2+replicas+i])
		webhookURLs = append(webhookURLs, "http://"+notifierAddrs[i]+"/webhook/order-paid")
	}
	h.ordersURL = "http://" + ordersAddr
	proxy, proxyURL, err := startProxy(webhookURLs...)
	if err != nil {
		return err
	}
	h.proxy = proxy

	conf := filepath.Join(h.dir, "nats-server.conf")
	if err := writeNATSConfig(conf, ports[0], filepath.Join(h.dir, "jetstream")); err != nil {
		return err
	}
	secret, err := webhook.GenerateSecret()
	if err != nil {
		return err
	}
	env := func(own ...map[string]string) []string {
		e := []string{"NATS_URL=" + natsURL, "WEBHOOK_SECRET=" + secret, "LOG_FORMAT=json"}
		for _, m := range own {
			for k, v := range m {
				e = append(e, k+"="+v)
			}
		}
		return e
	}
	// A process's name is its fault target; bin is the binary it runs.
	newP := func(name, bin string, env []string, args ...string) (*proc, error) {
		return newProc(name, filepath.Join(binDir, bin), filepath.Join(logDir, name+".log"), env, args...)
	}
	// nats-server gets an empty environment, like the services get only
	// their settings, so that nothing from the caller changes a run.
	if h.nats, err = newP(targetNATS, "nats-server", []string{}, "-c", conf); err != nil {
		return err
	}
	if h.orders, err = newP(targetOrders, "orders", env(ordersSettings, map[string]string{"ORDERS_ADDR": ordersAddr})); err != nil {
		return err
	}
	h.baseURLs = []string{h.ordersURL}
	for i := range replicas {
		d, err := newP(fmt.Sprintf("dispatcher-%d", i+1), "dispatcher", env(dispatcherSettings, map[string]string{
			"DISPATCHER_ADDR": dispAddrs[i], "NOTIFICATION_WEBHOOK_URL": proxyURL,
			"ADMIN_TOKEN": adminToken, "SECRETS_KEY": "Y2hhb3Mgc2VjcmV0cyBrZXkgZm9yIHRlc3RzIG9ubHk=",
			"ALLOWED_NETWORKS": "127.0.0.0/8",
		}))
		if err != nil {
			return err
		}
		n, err := newP(fmt.Sprintf("notifier-%d", i+1), "notifier", env(notifierSettings, map[string]string{
			"NOTIFIER_ADDR": notifierAddrs[i], "SMTP_ADDR": h.mail.Addr,
		}))
		if err != nil {
			return err
		}
		h.dispatchers, h.notifiers = append(h.dispatchers, d), append(h.notifiers, n)
		h.baseURLs = append(h.baseURLs, "http://"+dispAddrs[i], "http://"+notifierAddrs[i])
		h.dispatcherURLs = append(h.dispatcherURLs, "http://"+dispAddrs[i])
	}
	h.byTarget = map[string]*proc{}
	for _, p := range h.procs() {
		h.byTarget[p.name] = p
	}
	h.log.printf("nats-server %s, orders %s, notifiers %s (behind the fault proxy %s), dispatchers %s, smtp %s",
		natsURL, h.ordersURL, strings.Join(notifierAddrs, " "), proxyURL, strings.Join(dispAddrs, " "), h.mail.Addr)
	h.log.printf("dispatcher %s; notifier %s; orders %s", settings(dispatcherSettings), settings(notifierSettings), settings(ordersSettings))
	for _, p := range h.procs() {
		if err := p.start(); err != nil {
			return err
		}
	}
	// The harness's own connection reads consumer state and dead letters;
	// it reconnects after every restart of nats-server like the services.
	h.nc, _, err = natsx.Connect(config.NATS{NATSURL: natsURL}, "jethook-chaos", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	h.js, err = jetstream.New(h.nc)
	return err
}

func settings(m map[string]string) string {
	var s []string
	for _, k := range []string{"RETRY_BASE", "RETRY_MAX", "MAX_DELIVER", "HTTP_TIMEOUT", "BREAKER_COOLOFF", "BREAKER_COOLOFF_MAX",
		"SMTP_TIMEOUT", "SMTP_DATA_TIMEOUT", "EMAIL_RETRY_BASE", "EMAIL_RETRY_MAX", "EMAIL_MAX_ATTEMPTS", "PUBLISH_TIMEOUT"} {
		if v, ok := m[k]; ok {
			s = append(s, k+"="+v)
		}
	}
	return strings.Join(s, " ")
}

// teardown stops every process the harness started, services first, and
// the in-process servers. It is safe after a partial setup.
func (h *harness) teardown() {
	var wg sync.WaitGroup
	for _, p := range h.services() {
		if p == nil || p.pid() == 0 {
			continue
		}
		wg.Go(func() {
			if r, err := p.stop(syscall.SIGTERM, termTimeout); err == nil && r.forced {
				h.log.printf("%s did not stop within %s of SIGTERM and was killed", p.name, termTimeout)
			}
		})
	}
	wg.Wait()
	if h.nats != nil && h.nats.pid() != 0 {
		_, _ = h.nats.stop(syscall.SIGTERM, killTimeout)
	}
	for _, p := range h.procs() {
		if p != nil {
			_ = p.log.Close()
		}
	}
	if h.nc != nil {
		h.nc.Close()
	}
	if h.proxy != nil {
		h.proxy.close()
	}
	if h.mail != nil {
		_ = h.mail.Close()
	}
}

// build compiles the three services and nats-server into dir, from the
// root of the go.work workspace so that every module's own dependencies
// and the nats-server version the shared module requires are used.
func build(ctx context.Context, dir string) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	gowork := strings.TrimSpace(string(out))
	if err != nil || gowork == "" || gowork == "off" {
		return errors.New("building the binaries needs the jethook go.work workspace: run the harness inside the repository")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator),
		"./orders/cmd/orders", "./dispatcher/cmd/dispatcher", "./notifier/cmd/notifier",
		"github.com/nats-io/nats-server/v2")
	cmd.Dir = filepath.Dir(gowork)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// writeNATSConfig writes the nats-server configuration: 127.0.0.1 only,
// JetStream on file storage in storeDir, which outlives every restart.
// sync_interval keeps its default, as in production.
func writeNATSConfig(path, port, storeDir string) error {
	conf := fmt.Sprintf(`server_name: jethook-chaos
listen: 127.0.0.1:%s
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 1GB
}
`, port, storeDir)
	return os.WriteFile(path, []byte(conf), 0o644)
}

// freePorts returns n distinct free ports on 127.0.0.1. The processes bind
// them later, and again after each restart.
func freePorts(n int) ([]string, error) {
	// Ports below the ephemeral range: a killed process restarts on its
	// port, which an outgoing connection must not have taken meanwhile.
	var ports []string
	for range n {
		port, err := testkit.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, strconv.Itoa(port))
	}
	return ports, nil
}

// waitReady waits until every service answers /readyz with 200.
func (h *harness) waitReady(ctx context.Context, after string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for _, base := range h.baseURLs {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if !sleep(ctx, 100*time.Millisecond) {
				return fmt.Errorf("%s/readyz did not answer 200 within %s after %s", base, readyTimeout, after)
			}
		}
	}
	return nil
}

// supervise restarts a process that exits without being told to, and
// records the crash, until ctx ends.
func (h *harness) supervise(ctx context.Context) {
	for sleep(ctx, 200*time.Millisecond) {
		for _, p := range h.procs() {
			how, ok := p.crashed()
			if !ok {
				continue
			}
			h.mu.Lock()
			h.res.Crashes = append(h.res.Crashes, fmt.Sprintf("%s exited on its own (%s); see its log", p.name, how))
			h.mu.Unlock()
			h.log.printf("%s exited on its own (%s); starting it again", p.name, how)
			if err := p.start(); err != nil {
				h.log.printf("%v", err)
			}
		}
	}
}

// progress prints a status line every few seconds until ctx ends.
func (h *harness) progress(ctx context.Context, gen *loadGen, planned int) {
	for sleep(ctx, progressEvery) {
		st := gen.stats()
		h.mu.Lock()
		faults := h.res.Faults
		h.mu.Unlock()
		h.log.printf("orders=%d acked=%d open=%d emails=%d faults=%d/%d",
			st.created, st.acked, st.open, len(h.mail.Messages()), faults, planned)
	}
}

// inject runs the plan: the faults of each target one after the other, the
// targets side by side. It returns when every fault is over and every
// target works normally again.
func (h *harness) inject(ctx context.Context, start time.Time, plan []Fault) {
	byTarget := map[string][]Fault{}
	for _, f := range plan {
		byTarget[f.target()] = append(byTarget[f.target()], f)
	}
	end := start.Add(h.cfg.Duration)
	var wg sync.WaitGroup
	for _, faults := range byTarget {
		wg.Go(func() {
			for _, f := range faults {
				h.injectOne(ctx, start, end, f)
			}
		})
	}
	wg.Wait()
}

func (h *harness) injectOne(ctx context.Context, start, end time.Time, f Fault) {
	at := start.Add(f.At)
	if !sleep(ctx, time.Until(at)) {
		return
	}
	// A fault delayed by a slow stop of the previous one on its target
	// still runs, unless it would no longer be over before the load ends.
	if late := time.Since(at); late > time.Second && time.Now().Add(f.For+kindSpecs[f.Kind].recovery).After(end) {
		h.log.printf("fault %s skipped: %.1fs late, no time left to recover before the load stops", f.Kind, late.Seconds())
		return
	}
	injected := func(detail string, args ...any) {
		h.mu.Lock()
		h.res.Faults++
		h.res.ByKind[f.Kind]++
		h.mu.Unlock()
		h.log.printf("fault %s: "+detail, append([]any{f.Kind}, args...)...)
	}
	// The fault ends after f.For even when ctx ends early: a target is
	// never left broken.
	wait := func() { sleep(context.WithoutCancel(ctx), f.For) }
	switch f.Kind {
	case KillOrders, KillDispatcher1, KillDispatcher2, KillNotifier1, KillNotifier2, KillNATS:
		h.stopAndRestart(f, syscall.SIGKILL, killTimeout, injected, wait)
	case TermOrders, TermDispatcher1, TermDispatcher2, TermNotifier1, TermNotifier2:
		h.stopAndRestart(f, syscall.SIGTERM, termTimeout, injected, wait)
	case Webhook500, Webhook503, Webhook429, WebhookHang:
		mode := map[Kind]proxyMode{Webhook500: answer500, Webhook503: answer503, Webhook429: answer429, WebhookHang: forwardAndHang}[f.Kind]
		h.proxy.set(mode)
		if d, ok := retryAfter[mode]; ok {
			injected("the webhook path fails for %.2fs, asking for Retry-After: %d", f.For.Seconds(), int(d/time.Second))
		} else {
			injected("the webhook path fails for %.2fs", f.For.Seconds())
		}
		wait()
		h.proxy.set(passThrough)
		h.log.printf("fault %s over", f.Kind)
	case SMTPRefuse:
		h.mail.Refuse(math.MaxInt)
		injected("the mail server answers 451 for %.2fs", f.For.Seconds())
		wait()
		h.mail.Refuse(0)
		h.log.printf("fault %s over", f.Kind)
	case SMTPStall:
		h.mail.Stall(true)
		injected("the mail server stalls every message for %.2fs", f.For.Seconds())
		wait()
		h.mail.Stall(false)
		h.log.printf("fault %s over", f.Kind)
	case SMTPReject:
		h.mail.RejectRecipients(h.reject)
		injected("the mail server refuses every recipient @%s with 550 for %.2fs", refusableDomain, f.For.Seconds())
		wait()
		h.mail.RejectRecipients(nil)
		h.log.printf("fault %s over", f.Kind)
	case AdminThrottle:
		prev, err := h.setRateLimit(ctx, throttledRate)
		if err != nil {
			h.log.printf("fault %s not injected: %v", f.Kind, err)
			return
		}
		injected("sub_notifier's rate_limit_per_s is %d (was %d) for %.2fs", throttledRate, prev, f.For.Seconds())
		wait()
		if _, err := h.setRateLimit(context.WithoutCancel(ctx), prev); err != nil {
			h.log.printf("fault %s: rate_limit_per_s not restored: %v", f.Kind, err)
		}
		h.log.printf("fault %s over", f.Kind)
	case SMTPSlow:
		if !h.slowGuard.TryLock() {
			h.log.printf("fault %s waits for a notifier's stop to end", f.Kind)
			h.slowGuard.Lock()
		}
		defer h.slowGuard.Unlock()
		h.mail.SetLatency(slowDotLatency)
		injected("the mail server answers each final dot after %s, for %.2fs", slowDotLatency, f.For.Seconds())
		wait()
		h.mail.SetLatency(0)
		h.waitSlowAnswers(f)
	}
}

// reject is the relay's recipient filter during an smtp:reject window: it
// refuses the refusable addresses and remembers them.
func (h *harness) reject(addr string) bool {
	if !refusable(addr) {
		return false
	}
	h.mu.Lock()
	h.refused[addr] = true
	h.mu.Unlock()
	return true
}

// waitSlowAnswers waits until the relay has answered every message that
// was still waiting out the latency of a slow window.
func (h *harness) waitSlowAnswers(f Fault) {
	deadline := time.Now().Add(slowDotLatency + 5*time.Second)
	for h.mail.InFlight() > 0 {
		if time.Now().After(deadline) {
			h.log.printf("fault %s: the mail server still holds %d messages %s after the window", f.Kind, h.mail.InFlight(), slowDotLatency+5*time.Second)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.log.printf("fault %s over; every slow answer is in", f.Kind)
}

func (h *harness) stopAndRestart(f Fault, sig syscall.Signal, timeout time.Duration, injected func(string, ...any), wait func()) {
	p := h.byTarget[f.target()]
	if stopsNotifier(f.Kind) && !h.slowGuard.TryRLock() {
		h.log.printf("fault %s waits for the slow relay's last answers", f.Kind)
		h.slowGuard.RLock()
	}
	pid := p.pid()
	r, err := p.stop(sig, timeout)
	if stopsNotifier(f.Kind) {
		h.slowGuard.RUnlock()
	}
	if err != nil {
		h.log.printf("fault %s not injected: %v", f.Kind, err)
	} else {
		injected("pid %d stopped in %s (%s); down for %.2fs", pid, r.took.Round(time.Millisecond), r.state, f.For.Seconds())
		if sig == syscall.SIGTERM {
			h.noteStop(p.name, r)
		}
	}
	wait()
	if err := p.start(); err != nil {
		h.log.printf("fault %s: restart failed: %v", f.Kind, err)
		return
	}
	h.log.printf("fault %s over: started again as pid %d", f.Kind, p.pid())
}

// noteStop records a graceful stop that broke the services' promise: exit
// 0 within 10 s of SIGTERM.
func (h *harness) noteStop(name string, r stopResult) {
	var note string
	switch {
	case r.forced:
		note = fmt.Sprintf("%s did not exit within %s of SIGTERM and was killed", name, termTimeout)
	case !r.state.Success():
		note = fmt.Sprintf("%s exited after SIGTERM with %s", name, r.state)
	case r.took > 10*time.Second:
		note = fmt.Sprintf("%s took %s to exit after SIGTERM", name, r.took.Round(time.Millisecond))
	default:
		return
	}
	h.mu.Lock()
	h.res.Notes = append(h.res.Notes, note)
	h.mu.Unlock()
	h.log.printf("note: %s", note)
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// header returns the first value of a message header, or "".
func header(h nats.Header, key string) string {
	if h == nil {
		return ""
	}
	return h.Get(key)
}
