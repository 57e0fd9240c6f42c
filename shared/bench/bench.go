package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/smtptest"
	"github.com/jethook/jethook/shared/webhook"
)

// Phases of a run, in the order they run. Each can be left out.
const (
	PhaseFiber     = "fiber"     // ceiling: a bare Fiber handler
	PhaseJetStream = "jetstream" // ceiling: raw publishes with their PubAck
	PhaseLatency   = "latency"   // open loop: POST → email latency at a fixed rate
	PhaseE2E       = "e2e"       // closed loop with the whole pipeline running
	PhaseDrain     = "drain"     // the API alone, then a backlog's drain
	PhaseNotifier  = "notifier"  // ceiling: raw webhook POSTs to the notifier
)

// AllPhases is every phase, in the order a run takes them. The notifier
// ceiling comes last because the emails it causes are not waited for.
var AllPhases = []string{PhaseFiber, PhaseJetStream, PhaseLatency, PhaseE2E, PhaseDrain, PhaseNotifier}

// Services are the binaries whose environment can be extended.
var Services = []string{"orders", "dispatcher", "notifier"}

// Config says how hard and how long each phase runs.
type Config struct {
	// Concurrency is the number of closed-loop workers, for the API and
	// for every ceiling.
	Concurrency int
	// Duration bounds each closed-loop phase.
	Duration time.Duration
	// Rate is the open loop's orders per second, for RateDuration, over at
	// most OpenConns connections.
	Rate         float64
	RateDuration time.Duration
	OpenConns    int
	// E2EOrders bounds the orders of the end-to-end phase.
	E2EOrders int
	// Backlog is how many orders the drain phase queues while the
	// dispatcher is stopped.
	Backlog int
	// LogEmails runs the notifier without a relay: it logs each email
	// instead of sending it, and the bench reads its log.
	LogEmails bool
	// SMTPLatency is how long the relay takes to answer the final "." of
	// each message.
	SMTPLatency time.Duration
	// WaitTimeout bounds the wait for a phase's emails; DrainTimeout bounds
	// the drain, and the posting of its backlog.
	WaitTimeout  time.Duration
	DrainTimeout time.Duration
	// NoIdempotencyKey sends orders without an Idempotency-Key.
	NoIdempotencyKey bool
	// DownSubscription makes the drain run beside a second subscription to
	// the same events whose endpoint refuses every connection, created
	// through the admin API before the backlog is queued.
	DownSubscription bool
	// Phases to run; nil means AllPhases.
	Phases []string
	// Env adds KEY=VALUE settings to a service's environment, by service
	// name; they override the tool's own.
	Env map[string][]string
	// BinDir holds prebuilt orders, dispatcher, notifier and nats-server
	// binaries; empty means build them from the go.work workspace.
	BinDir string
	// Self is the tool's own executable, run as `Self -serve-fiber ADDR`
	// for the Fiber ceiling.
	Self string
	// KeepDir keeps the work directory (logs, JetStream store).
	KeepDir bool
}

// Defaults of a run, the figures of the performance issue.
const (
	DefaultConcurrency  = 50
	DefaultDuration     = 10 * time.Second
	DefaultRate         = 1000
	DefaultRateDuration = 10 * time.Second
	DefaultOpenConns    = 256
	DefaultE2EOrders    = 30_000
	DefaultBacklog      = 100_000
	DefaultWaitTimeout  = 3 * time.Minute
	DefaultDrainTimeout = 10 * time.Minute
)

// Validate reports every setting out of range at once.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Concurrency >= 1 && c.Concurrency <= 1000, "concurrency %d: want 1 to 1000", c.Concurrency)
	check(c.Duration >= time.Second && c.Duration <= 10*time.Minute, "duration %s: want 1s to 10m", c.Duration)
	check(c.Rate > 0 && c.Rate <= 100_000, "rate %g: want more than 0 and at most 100000 orders/s", c.Rate)
	check(c.RateDuration >= time.Second && c.RateDuration <= 10*time.Minute, "rate duration %s: want 1s to 10m", c.RateDuration)
	check(c.Rate*c.RateDuration.Seconds() <= 1_000_000, "rate × rate duration is over 1,000,000 orders")
	check(c.OpenConns >= 1 && c.OpenConns <= 4096, "open-loop connections %d: want 1 to 4096", c.OpenConns)
	check(c.E2EOrders >= 1 && c.E2EOrders <= 1_000_000, "e2e orders %d: want 1 to 1000000", c.E2EOrders)
	check(c.Backlog >= 1 && c.Backlog <= 1_000_000, "backlog %d: want 1 to 1000000", c.Backlog)
	check(c.SMTPLatency >= 0 && c.SMTPLatency <= time.Minute, "smtp latency %s: want 0 to 1m", c.SMTPLatency)
	check(c.WaitTimeout >= time.Second && c.WaitTimeout <= time.Hour, "wait timeout %s: want 1s to 1h", c.WaitTimeout)
	check(c.DrainTimeout >= time.Second && c.DrainTimeout <= time.Hour, "drain timeout %s: want 1s to 1h", c.DrainTimeout)
	for _, p := range c.Phases {
		check(slices.Contains(AllPhases, p), "unknown phase %q: want some of %s", p, strings.Join(AllPhases, ","))
	}
	for svc, kvs := range c.Env {
		check(slices.Contains(Services, svc), "unknown service %q: want one of %s", svc, strings.Join(Services, ", "))
		for _, kv := range kvs {
			k, _, ok := strings.Cut(kv, "=")
			check(ok && k != "", "setting %q for %s: want KEY=VALUE", kv, svc)
		}
	}
	return errors.Join(errs...)
}

func (c Config) runs(phase string) bool {
	return len(c.Phases) == 0 || slices.Contains(c.Phases, phase)
}

// harness is one run: the processes, the relay, and what was measured.
type harness struct {
	cfg  Config
	log  io.Writer
	dir  string
	mail *smtptest.Server
	// logged reads the notifier's log for its emails, with LogEmails.
	logged *logSink
	nc     *nats.Conn
	js     jetstream.JetStream

	nats, orders, dispatcher, notifier, fiber *proc
	ordersAddr, notifierAddr, fiberAddr       string
	dispatcherAddr, adminToken                string
	secrets                                   []webhook.Secret

	// emailed counts the orders answered 201 so far, each of which the
	// relay must accept one email for; missing counts those a phase gave
	// up waiting for.
	emailed, missing int
	rep              *Report
}

// Run starts everything, runs the phases of cfg and stops everything it
// started. progress receives a line per step. The report holds what was
// measured, also when a phase failed or ctx ended.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "jethook-bench-")
	if err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, log: progress, dir: dir, rep: newReport(cfg)}
	err = h.run(ctx)
	h.teardown()
	h.rep.finish(h)
	if cfg.KeepDir || err != nil {
		h.printf("work directory kept: %s", dir)
	} else {
		_ = os.RemoveAll(dir)
	}
	return h.rep, err
}

func (h *harness) printf(format string, args ...any) {
	fmt.Fprintf(h.log, "bench: "+format+"\n", args...)
}

func (h *harness) run(ctx context.Context) error {
	if err := h.setup(ctx); err != nil {
		return err
	}
	h.printf("warm-up: 1,000 orders through the pipeline")
	_, warm, _ := h.post("warm", func(req request) *loadResult {
		return closedLoop(ctx, h.ordersAddr, h.cfg.Concurrency, 1000, time.Minute, req)
	})
	if _, err := h.await(ctx, "warm", warm, h.cfg.WaitTimeout); err != nil {
		return err
	}
	phases := []struct {
		name string
		run  func(context.Context) error
	}{
		{PhaseFiber, h.fiberCeiling},
		{PhaseJetStream, h.jetstreamCeiling},
		{PhaseLatency, h.latency},
		{PhaseE2E, h.endToEnd},
		{PhaseDrain, h.drain},
		{PhaseNotifier, h.notifierCeiling},
	}
	for _, p := range phases {
		if !h.cfg.runs(p.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		h.rep.sampleLoad()
		if err := p.run(ctx); err != nil {
			return fmt.Errorf("phase %s: %w", p.name, err)
		}
		if err := h.alive(); err != nil {
			return fmt.Errorf("after phase %s: %w", p.name, err)
		}
	}
	return nil
}

// alive reports a process that ended although the tool did not stop it.
func (h *harness) alive() error {
	for _, p := range []*proc{h.nats, h.orders, h.dispatcher, h.notifier} {
		if ok, how := p.running(); !ok {
			return fmt.Errorf("%s is not running (%s); see its log in %s", p.name, how, filepath.Join(h.dir, "logs"))
		}
	}
	return nil
}

// setup builds the binaries and starts nats-server, the relay and the
// three services, and waits until each is ready.
func (h *harness) setup(ctx context.Context) error {
	bin := h.cfg.BinDir
	if bin == "" {
		bin = filepath.Join(h.dir, "bin")
		h.printf("building orders, dispatcher, notifier and nats-server")
		began := time.Now()
		if err := build(ctx, bin); err != nil {
			return err
		}
		h.printf("built in %s", time.Since(began).Round(100*time.Millisecond))
	}
	logs := filepath.Join(h.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	var err error
	if h.mail, err = smtptest.Listen("127.0.0.1:0"); err != nil {
		return err
	}
	h.mail.SetLatency(h.cfg.SMTPLatency)
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	natsURL := "nats://127.0.0.1:" + ports[0]
	h.ordersAddr, h.notifierAddr, h.fiberAddr = "127.0.0.1:"+ports[1], "127.0.0.1:"+ports[2], "127.0.0.1:"+ports[4]
	h.dispatcherAddr = "127.0.0.1:" + ports[3]
	dispatcherAddr := h.dispatcherAddr
	conf := filepath.Join(h.dir, "nats-server.conf")
	if err := writeNATSConfig(conf, ports[0], filepath.Join(h.dir, "jetstream")); err != nil {
		return err
	}
	secret, err := webhook.GenerateSecret()
	if err != nil {
		return err
	}
	if h.secrets, err = webhook.ParseSecrets(secret); err != nil {
		return err
	}
	env := func(service string, own ...string) []string {
		e := append([]string{"NATS_URL=" + natsURL, "WEBHOOK_SECRET=" + secret, "LOG_FORMAT=json"}, own...)
		return append(e, h.cfg.Env[service]...)
	}
	newP := func(name string, env []string, args ...string) (*proc, error) {
		return newProc(name, filepath.Join(bin, name), filepath.Join(logs, name+".log"), env, args...)
	}
	if h.nats, err = newP("nats-server", []string{}, "-c", conf); err != nil {
		return err
	}
	if h.orders, err = newP("orders", env("orders", "ORDERS_ADDR="+h.ordersAddr)); err != nil {
		return err
	}
	adminToken, secretsKey, err := adminSettings()
	if err != nil {
		return err
	}
	h.adminToken = adminToken
	if h.dispatcher, err = newP("dispatcher", env("dispatcher", "DISPATCHER_ADDR="+dispatcherAddr,
		"NOTIFICATION_WEBHOOK_URL=http://"+h.notifierAddr+"/webhook/order-paid",
		"ADMIN_TOKEN="+adminToken, "SECRETS_KEY="+secretsKey, "ALLOWED_NETWORKS=127.0.0.0/8")); err != nil {
		return err
	}
	relay := "SMTP_ADDR=" + h.mail.Addr
	if h.cfg.LogEmails {
		relay = "SMTP_ADDR="
		h.logged = &logSink{path: filepath.Join(logs, "notifier.log")}
	}
	if h.notifier, err = newP("notifier", env("notifier", "NOTIFIER_ADDR="+h.notifierAddr, relay)); err != nil {
		return err
	}
	for _, svc := range Services {
		if extra := h.cfg.Env[svc]; len(extra) > 0 {
			h.printf("%s: extra environment %s", svc, strings.Join(redacted(extra), " "))
		}
	}
	for _, p := range []*proc{h.nats, h.orders, h.dispatcher, h.notifier} {
		if err := p.start(); err != nil {
			return err
		}
	}
	h.nc, err = nats.Connect(natsURL, nats.Name("jethook-bench"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return err
	}
	for _, addr := range []string{h.ordersAddr, h.notifierAddr, dispatcherAddr} {
		if err := waitReady(ctx, addr, 60*time.Second); err != nil {
			return err
		}
	}
	h.printf("ready: nats-server %s, orders %s, notifier %s, dispatcher %s, relay %s (latency %s)",
		natsURL, h.ordersAddr, h.notifierAddr, dispatcherAddr, h.mail.Addr, h.cfg.SMTPLatency)
	return nil
}

// redacted shows the settings with their values hidden when the name
// suggests a credential.
func redacted(kvs []string) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		k, _, _ := strings.Cut(kv, "=")
		out[i] = kv
		for _, secret := range []string{"SECRET", "PASSWORD", "TOKEN", "KEY", "CREDS", "NKEY"} {
			if strings.Contains(strings.ToUpper(k), secret) {
				out[i] = k + "=xxxxx"
			}
		}
	}
	return out
}

// teardown stops every process the tool started, services first, by pid.
func (h *harness) teardown() {
	procs := []*proc{h.fiber, h.orders, h.dispatcher, h.notifier}
	for _, p := range procs {
		if p != nil {
			p.samplePeak()
		}
	}
	if h.nats != nil {
		h.nats.samplePeak()
	}
	for _, p := range append(procs, h.nats) {
		if p == nil {
			continue
		}
		if err := p.stop(); err != nil {
			h.printf("%v", err)
		}
		p.close()
	}
	if h.nc != nil {
		h.nc.Close()
	}
	if h.mail != nil {
		_ = h.mail.Close()
	}
}

// build compiles the three services and nats-server into dir, from the
// root of the go.work workspace, so that each module's own dependencies and
// the nats-server version the shared module requires are used.
func build(ctx context.Context, dir string) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	gowork := strings.TrimSpace(string(out))
	if err != nil || gowork == "" || gowork == "off" {
		return errors.New("building the binaries needs the jethook go.work workspace: run the tool inside the repository, or pass -bin")
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
// JetStream on file storage in storeDir, sync_interval at its default, as
// in the chaos harness and in a cluster deployment.
func writeNATSConfig(path, port, storeDir string) error {
	conf := fmt.Sprintf(`server_name: jethook-bench
listen: 127.0.0.1:%s
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 8GB
}
`, port, storeDir)
	return os.WriteFile(path, []byte(conf), 0o644)
}

// notificationsSeq is the last sequence of NOTIFICATIONS: every webhook the
// notifier accepted, also those already emailed and removed.
func (h *harness) notificationsSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, natsx.StreamNotifications)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// processes returns the processes by name, for the memory figures.
func (h *harness) processes() map[string]*proc {
	m := map[string]*proc{}
	for _, p := range []*proc{h.nats, h.orders, h.dispatcher, h.notifier} {
		if p != nil {
			m[p.name] = p
		}
	}
	return m
}

// adminSettings returns a fresh ADMIN_TOKEN and SECRETS_KEY for the
// dispatcher of one run.
func adminSettings() (token, key string, err error) {
	b := make([]byte, 64)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	return hex.EncodeToString(b[:32]), base64.StdEncoding.EncodeToString(b[32:]), nil
}
