// Command jethook-bench measures the pipeline on this machine and prints
// one table: the orders API's throughput and latency, end-to-end emails per
// second, the latency from POST to the relay's acceptance of the email at
// a fixed rate, the drain of a backlog, each process's peak memory, and the
// ceilings measured in the same run (a bare Fiber handler, raw JetStream
// publishes with their PubAck, raw webhook POSTs to the notifier) with each
// figure's ratio to its ceiling. It is what `make bench` starts; see
// docs/BENCHMARKS.md for the method.
//
// It builds and starts a nats-server, the three services and an
// in-process SMTP relay, all on 127.0.0.1, bounds every phase in count and
// time, and stops every process it started by its pid. The table goes to
// standard output, progress to standard error.
//
//	jethook-bench [-c 50] [-duration 10s] [-rate 1000] [-smtp-latency 20ms]
//	              [-env-notifier KEY=VALUE]... [-phases fiber,jetstream,...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/jethook/jethook/shared/bench"
)

func main() {
	if err := run(context.Background(), os.Args, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "jethook-bench:", err)
		}
		os.Exit(1)
	}
}

// settings collects the repeated -env-<service> KEY=VALUE flags.
type settings []string

func (s *settings) String() string { return strings.Join(*s, " ") }

func (s *settings) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*s = append(*s, v)
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet("jethook-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := bench.Config{}
	fs.IntVar(&cfg.Concurrency, "c", bench.DefaultConcurrency, "closed-loop workers, for the API and every ceiling")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "bound of each closed-loop phase")
	fs.Float64Var(&cfg.Rate, "rate", bench.DefaultRate, "open loop: orders per second")
	fs.DurationVar(&cfg.RateDuration, "rate-duration", bench.DefaultRateDuration, "open loop: how long")
	fs.IntVar(&cfg.OpenConns, "open-conns", bench.DefaultOpenConns, "open loop: connections at most")
	fs.IntVar(&cfg.E2EOrders, "e2e-orders", bench.DefaultE2EOrders, "end to end: orders at most")
	fs.IntVar(&cfg.Backlog, "backlog", bench.DefaultBacklog, "drain: orders queued while the dispatcher is stopped")
	fs.BoolVar(&cfg.LogEmails, "log-emails", false, "run the notifier without a relay, logging each email instead of sending it")
	fs.DurationVar(&cfg.SMTPLatency, "smtp-latency", 0, "the relay's wait before it answers the final \".\" of each message")
	fs.DurationVar(&cfg.WaitTimeout, "wait-timeout", bench.DefaultWaitTimeout, "bound of the wait for a phase's emails")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", bench.DefaultDrainTimeout, "bound of the drain, and of queueing its backlog")
	fs.BoolVar(&cfg.NoIdempotencyKey, "no-idempotency-key", false, "send orders without an Idempotency-Key")
	fs.BoolVar(&cfg.DownSubscription, "down-subscription", false, "drain: beside a second subscription to the same events whose endpoint refuses every connection")
	phases := fs.String("phases", strings.Join(bench.AllPhases, ","), "phases to run, comma-separated")
	fs.StringVar(&cfg.BinDir, "bin", "", "directory of prebuilt orders, dispatcher, notifier and nats-server binaries (default: build them)")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the work directory: every process's log and the JetStream store")
	timeout := fs.Duration("timeout", time.Hour, "bound of the whole run")
	cpuProfile := fs.String("cpuprofile", "", "write the tool's own CPU profile (load generator and relay) to this file")
	serveFiber := fs.String("serve-fiber", "", "internal: serve the bare Fiber ceiling on this address")
	cfg.Env = map[string][]string{}
	env := map[string]*settings{}
	for _, svc := range bench.Services {
		env[svc] = &settings{}
		fs.Var(env[svc], "env-"+svc, "KEY=VALUE added to the "+svc+"'s environment (repeatable)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see -h", fs.Args())
	}
	if *serveFiber != "" {
		return bench.ServeFiber(ctx, *serveFiber)
	}
	for svc, s := range env {
		if len(*s) > 0 {
			cfg.Env[svc] = *s
		}
	}
	for p := range strings.SplitSeq(*phases, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Phases = append(cfg.Phases, p)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Self = self

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := bench.Run(ctx, cfg, stderr)
	if rep != nil {
		fmt.Fprint(stdout, rep.Markdown())
	}
	return err
}
