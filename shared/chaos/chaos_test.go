package chaos

import (
	"context"
	"slices"
	"testing"
	"time"
)

// shortConfig is the run of `make test`: a fixed seed, a kill -9 of
// nats-server and every other kind of fault but one, usually over in about
// 40 s.
//
// It leaves out kill -9 of the notifier. A kill that lands while the email
// worker sends an email is the window the notifier documents: between the
// mail server's acceptance and the KV write it sends the email twice; just
// before, the email waits for the dead worker's claim to expire (AckWait +
// 1 min, 82 s here). Either is rare per kill but likely enough, on a busy
// machine, to make a test fail or take minutes by chance; the default run
// of the command includes that kill and reports what it causes.
//
// The drain may still take up to 90 s: a kill of nats-server that loses
// the answer to a claim leaves that claim to expire too.
func shortConfig() Config {
	return Config{
		Seed:         20261128,
		Duration:     30 * time.Second,
		Rate:         5,
		Faults:       12,
		Kinds:        slices.DeleteFunc(slices.Clone(AllKinds), func(k Kind) bool { return k == KillNotifier }),
		DrainTimeout: 90 * time.Second,
	}
}

// TestChaosShort runs the harness briefly: every acknowledged order must
// produce exactly one email, although every process was killed or stopped
// and the receiver and the mail server failed along the way.
func TestChaosShort(t *testing.T) {
	cfg := shortConfig()
	plan := Plan(cfg)
	if len(plan) < 10 || !slices.ContainsFunc(plan, func(f Fault) bool { return f.Kind == KillNATS }) {
		t.Fatalf("the short plan needs at least 10 faults and a kill of nats-server:\n%v", plan)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg, t.Output())
	t.Log(res.Line())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Failures() {
		t.Error(f)
	}
	if res.Acked < int(cfg.Duration.Seconds()*cfg.Rate/2) {
		t.Errorf("only %d orders acknowledged: the load did not run", res.Acked)
	}
}
