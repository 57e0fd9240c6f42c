package bench

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc on Linux.
const clockTicks = 100

// openFigures is the latency phase: the API at a fixed rate, and the time
// from each POST's slot in the schedule to its email.
type openFigures struct {
	api      stats
	cpu      *cpuUse
	emails   emailOutcome
	p50, p99 time.Duration
}

// e2eFigures is the closed loop with the whole pipeline running: the API
// while it runs, and the emails from the first POST to the last email.
type e2eFigures struct {
	api     stats
	cpu     *cpuUse
	emails  emailOutcome
	elapsed time.Duration
}

// drainFigures is the backlog phase: the API alone while the dispatcher is
// stopped, then the drain once it starts.
type drainFigures struct {
	api          stats
	cpu          *cpuUse
	backlog      int
	besideDown   bool          // a second subscription's endpoint refused every connection
	webhooksTook time.Duration // 0 when the webhooks did not all arrive
	webhooksDone int           // webhooks accepted by the deadline, when incomplete
	emails       emailOutcome
	emailsTook   time.Duration
	incomplete   bool
}

// beside names the down subscription in the drain's rows, when there was one.
func (d *drainFigures) beside() string {
	if d.besideDown {
		return ", beside a subscription that is down"
	}
	return ""
}

// Report is what a run measured, and the conditions it ran in.
type Report struct {
	cfg      Config
	started  time.Time
	ended    time.Time
	busy0    int64
	cpus     int
	load     []float64 // 1-minute load average at the start of each phase
	fiber    *stats
	notifier *stats
	open     *openFigures
	e2e      *e2eFigures
	drain    *drainFigures
	rss      map[string]int64
	cpu      map[string]int64 // clock ticks
	others   float64          // CPUs' worth used by other processes
	notes    []string
	// jetstream is the raw publish ceiling.
	jetstream *stats
}

func newReport(cfg Config) *Report {
	r := &Report{cfg: cfg, started: time.Now(), rss: map[string]int64{}, cpu: map[string]int64{}}
	r.busy0, r.cpus, _ = busyTicks()
	r.sampleLoad()
	return r
}

func (r *Report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *Report) sampleLoad() {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			r.load = append(r.load, v)
		}
	}
}

// finish reads the memory and CPU figures of every process; h's processes
// have all been stopped, each sampled just before.
func (r *Report) finish(h *harness) {
	r.ended = time.Now()
	var ours int64
	for name, p := range h.processes() {
		r.rss[name] = p.peakRSS()
		r.cpu[name] = p.cpuTime()
		ours += r.cpu[name]
	}
	if h.fiber != nil {
		r.rss[h.fiber.name] = h.fiber.peakRSS()
		r.cpu[h.fiber.name] = h.fiber.cpuTime()
		ours += r.cpu[h.fiber.name]
	}
	self, _ := cpuTicks("self")
	r.cpu[selfName] = self
	ours += self
	if busy, _, err := busyTicks(); err == nil && r.busy0 > 0 {
		wall := r.ended.Sub(r.started).Seconds()
		r.others = max(float64(busy-r.busy0-ours)/clockTicks/wall, 0)
	}
}

// Markdown renders the report: the conditions, then one table.
func (r *Report) Markdown() string {
	var b strings.Builder
	c := r.cfg
	fmt.Fprintf(&b, "machine: %s, %d CPUs, Linux %s, %s\n", cpuModel(), r.cpus, readTrim("/proc/sys/kernel/osrelease"), runtime.Version())
	if len(r.load) > 0 {
		fmt.Fprintf(&b, "conditions: %s wall; load average %.2f at the start (%.2f–%.2f before the phases); other processes used %.2f CPUs on average\n",
			r.ended.Sub(r.started).Round(time.Second), r.load[0], slices.Min(r.load), slices.Max(r.load), r.others)
	}
	keys := "an Idempotency-Key on every order"
	if c.NoIdempotencyKey {
		keys = "no Idempotency-Key"
	}
	fmt.Fprintf(&b, "settings: c=%d, closed-loop phases up to %s, open loop %s orders/s for %s over %d connections, relay latency %s, %s\n",
		c.Concurrency, c.Duration, num(c.Rate), c.RateDuration, c.OpenConns, c.SMTPLatency, keys)
	for _, svc := range Services {
		if len(c.Env[svc]) > 0 {
			fmt.Fprintf(&b, "%s environment: %s\n", svc, strings.Join(redacted(c.Env[svc]), " "))
		}
	}
	b.WriteString("\n| measure | figure | p50 | p99 | ceiling | ratio | notes |\n| --- | ---: | ---: | ---: | --- | ---: | --- |\n")
	row := func(cells ...string) {
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	apiRow := func(label string, s stats, cpu *cpuUse) {
		var ceil, ratio []string
		if r.fiber != nil {
			ceil, ratio = append(ceil, "bare Fiber "+rate(r.fiber.rate)), append(ratio, fraction(s.rate, r.fiber.rate))
		}
		if r.jetstream != nil {
			ceil, ratio = append(ceil, "JetStream publish "+rate(r.jetstream.rate)), append(ratio, fraction(s.rate, r.jetstream.rate))
		}
		row(label, rate(s.rate), ms(s.p50), ms(s.p99), strings.Join(ceil, "; "), strings.Join(ratio, "; "), answers(s, "201")+cpuNote(cpu))
	}
	notifierCeiling := func(v float64) (string, string) {
		if r.notifier == nil {
			return "", ""
		}
		return "notifier POST " + rate(r.notifier.rate), fraction(v, r.notifier.rate)
	}
	if d := r.drain; d != nil {
		apiRow(fmt.Sprintf("API, c=%d, dispatcher stopped (the drain's %s orders)", c.Concurrency, count(d.api.count)), d.api, d.cpu)
	}
	if e := r.e2e; e != nil {
		apiRow(fmt.Sprintf("API, c=%d, whole pipeline running (the e2e orders)", c.Concurrency), e.api, e.cpu)
	}
	if o := r.open; o != nil {
		row(fmt.Sprintf("API at %s orders/s, open loop", num(c.Rate)), rate(o.api.rate), ms(o.api.p50), ms(o.api.p99), "", "", answers(o.api, "201")+cpuNote(o.cpu))
		row(fmt.Sprintf("POST → email accepted, at %s orders/s", num(c.Rate)), fmt.Sprintf("%s of %s emailed", count(o.emails.emailed), count(o.emails.orders)),
			ms(o.p50), ms(o.p99), "", "", exactlyOnce(o.emails))
	}
	if e := r.e2e; e != nil {
		v := 0.0
		if e.elapsed > 0 {
			v = float64(e.emails.emailed) / e.elapsed.Seconds()
		}
		ceil, ratio := notifierCeiling(v)
		row(fmt.Sprintf("end to end: %s orders at c=%d, first POST to last email", count(e.emails.orders), c.Concurrency),
			rate(v)+" emails", "", "", ceil, ratio, fmt.Sprintf("%s in %s; %s", count(e.emails.emailed), e.elapsed.Round(10*time.Millisecond), exactlyOnce(e.emails)))
	}
	if d := r.drain; d != nil {
		if d.webhooksTook > 0 {
			v := float64(d.backlog) / d.webhooksTook.Seconds()
			ceil, ratio := notifierCeiling(v)
			row(fmt.Sprintf("drain of %s%s: webhooks accepted by the notifier", count(d.backlog), d.beside()), rate(v), "", "", ceil, ratio,
				fmt.Sprintf("%s in %s (polled every %s)", count(d.backlog), d.webhooksTook.Round(10*time.Millisecond), pollEvery))
		} else {
			row(fmt.Sprintf("drain of %s%s: webhooks accepted by the notifier", count(d.backlog), d.beside()), "incomplete", "", "", "", "",
				fmt.Sprintf("%s within %s", count(d.webhooksDone), d.emailsTook.Round(time.Second)))
		}
		v := float64(d.emails.emailed) / d.emailsTook.Seconds()
		ceil, ratio := notifierCeiling(v)
		note := fmt.Sprintf("%s in %s; %s", count(d.emails.emailed), d.emailsTook.Round(10*time.Millisecond), exactlyOnce(d.emails))
		if d.incomplete {
			note = "incomplete: " + note
		}
		row(fmt.Sprintf("drain of %s%s: emails accepted by the relay", count(d.backlog), d.beside()), rate(v)+" emails", "", "", ceil, ratio, note)
	}
	for _, name := range []string{"nats-server", "orders", "dispatcher", "notifier", "fiber-ceiling", selfName} {
		rss, ok := r.rss[name]
		cpu, cok := r.cpu[name]
		if !ok && !cok {
			continue
		}
		label := "peak RSS (VmHWM), " + name
		figure := "n/a"
		if rss > 0 {
			figure = fmt.Sprintf("%.1f MiB", float64(rss)/(1<<20))
		}
		if name == selfName {
			label, figure = "load generator and relay (this tool)", ""
		}
		row(label, figure, "", "", "", "", fmt.Sprintf("CPU %.1f s", float64(cpu)/clockTicks))
	}
	if s := r.fiber; s != nil {
		row(fmt.Sprintf("ceiling: bare Fiber POST handler, c=%d", c.Concurrency), rate(s.rate), ms(s.p50), ms(s.p99), "", "", answers(*s, "201"))
	}
	if s := r.jetstream; s != nil {
		row(fmt.Sprintf("ceiling: JetStream publish + PubAck, c=%d", c.Concurrency), rate(s.rate), ms(s.p50), ms(s.p99), "", "", answers(*s, "acked"))
	}
	if s := r.notifier; s != nil {
		row(fmt.Sprintf("ceiling: signed webhook POST to the notifier, c=%d", c.Concurrency), rate(s.rate), ms(s.p50), ms(s.p99), "", "", answers(*s, "200"))
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "\nnote: %s", n)
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

// answers says how many requests got the wanted answer, and what the
// others got.
func answers(s stats, want string) string {
	parts := []string{fmt.Sprintf("%s × %s in %s", count(s.count), want, s.elapsed.Round(10*time.Millisecond))}
	statuses := make([]int, 0, len(s.others))
	for st := range s.others {
		statuses = append(statuses, st)
	}
	slices.Sort(statuses)
	for _, st := range statuses {
		parts = append(parts, fmt.Sprintf("%s × %d", count(s.others[st]), st))
	}
	if s.failed > 0 {
		parts = append(parts, fmt.Sprintf("%s without an answer", count(s.failed)))
	}
	return strings.Join(parts, ", ")
}

// cpuNote says what each process spent per order while the load ran, and
// what other processes took meanwhile.
func cpuNote(u *cpuUse) string {
	if u == nil || len(u.perRequest) == 0 {
		return ""
	}
	var parts []string
	for _, name := range []string{"orders", "nats-server", "dispatcher", "notifier", selfName} {
		if d, ok := u.perRequest[name]; ok && d > 0 {
			parts = append(parts, fmt.Sprintf("%s %d µs", strings.TrimPrefix(name, "jethook-"), d.Microseconds()))
		}
	}
	return fmt.Sprintf("; CPU per order: %s; other processes %.2f CPUs", strings.Join(parts, ", "), u.others)
}

func exactlyOnce(o emailOutcome) string {
	if o.missing == 0 && o.duplicated == 0 {
		return "each exactly once"
	}
	return fmt.Sprintf("%s missing, %s duplicated", count(o.missing), count(o.duplicated))
}

func rate(v float64) string { return count(int(v+0.5)) + "/s" }

func fraction(v, ceiling float64) string {
	if ceiling <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", v/ceiling)
}

func ms(d time.Duration) string {
	switch {
	case d == never:
		return "never"
	case d <= 0:
		return ""
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(100 * time.Millisecond).String()
}

// count writes n with thousands separators.
func count(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

func num(v float64) string {
	if v == float64(int(v)) {
		return count(int(v))
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
