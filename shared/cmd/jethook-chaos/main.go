// Command jethook-chaos runs the chaos harness: the whole pipeline as
// separate processes on 127.0.0.1 under continuous load, with faults
// injected on a schedule drawn from a seed, and then checks that every
// acknowledged order produced exactly one email. It is what `make chaos`
// starts; see docs/RELIABILITY.md.
//
// Settings come from the environment: CHAOS_SEED (default random, always
// printed), CHAOS_DURATION (default 2m), CHAOS_RATE (orders per second,
// default 5), CHAOS_FAULTS (default one per 2 s of the fault window). The
// last line of the output is the summary
//
//	chaos: seed=<n> acked=<n> emails=<n> lost=<n> duplicated=<n> refused=<n> faults=<n> dead_letters=<n>
//
// and the exit status is non-zero when an order was lost or duplicated, a
// dead letter is not the refusal of an email by the relay, fewer faults
// than planned were injected, or anything else the harness checks went
// wrong.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jethook/jethook/shared/chaos"
	"github.com/jethook/jethook/shared/config"
)

// errFailed means the run has printed why it failed.
var errFailed = errors.New("chaos run failed")

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errFailed) {
			for line := range strings.SplitSeq(err.Error(), "\n") {
				fmt.Fprintln(os.Stderr, "jethook-chaos:", line)
			}
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 1 {
		return fmt.Errorf("takes no arguments; set CHAOS_SEED, CHAOS_DURATION, CHAOS_RATE and CHAOS_FAULTS instead")
	}
	cfg, err := load(getenv)
	if err != nil {
		return err
	}

	res, err := chaos.Run(ctx, cfg, stdout)
	if err != nil {
		fmt.Fprintln(stdout, "chaos: run stopped:", err)
	}
	failures := res.Failures()
	for _, f := range failures {
		fmt.Fprintln(stdout, "chaos: FAIL:", f)
	}
	fmt.Fprintln(stdout, res.Line())
	if err != nil || len(failures) > 0 {
		faults := ""
		if cfg.Faults > 0 {
			faults = fmt.Sprintf(" CHAOS_FAULTS=%d", cfg.Faults)
		}
		fmt.Fprintf(stderr, "jethook-chaos: failed; reproduce the fault schedule with CHAOS_SEED=%d CHAOS_DURATION=%s CHAOS_RATE=%g%s\n",
			cfg.Seed, cfg.Duration, cfg.Rate, faults)
		return errFailed
	}
	return nil
}

// load reads the settings from the environment, naming every bad one.
func load(getenv func(string) string) (chaos.Config, error) {
	e := config.New(getenv)
	cfg := chaos.Config{
		Seed:     int64(e.Int("CHAOS_SEED", -1, 0, math.MaxInt)),
		Duration: e.Duration("CHAOS_DURATION", chaos.DefaultDuration, 10*time.Second, time.Hour),
		Rate:     chaos.DefaultRate,
		// Zero lets the harness choose from the duration.
		Faults: e.Int("CHAOS_FAULTS", 0, 1, chaos.MaxFaults),
	}
	var rateErr error
	if raw := strings.TrimSpace(getenv("CHAOS_RATE")); raw != "" {
		r, err := strconv.ParseFloat(raw, 64)
		if err != nil || r <= 0 || r > 200 || math.IsNaN(r) {
			rateErr = fmt.Errorf("invalid CHAOS_RATE=%q: want orders per second, more than 0 and at most 200, such as 5", raw)
		}
		cfg.Rate = r
	}
	if err := errors.Join(e.Err(), rateErr); err != nil {
		return chaos.Config{}, err
	}
	if cfg.Seed < 0 {
		// A random seed is printed at the start and in the summary, so
		// that any run can be repeated.
		cfg.Seed = rand.Int64N(1_000_000_000)
	}
	return cfg, nil
}
