package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/natsx"
)

// TestEndpointDownDoesNotDelayAnother: while one receiver is down for
// 30 s and another answers only after 5 s, a healthy one gets every event
// of the outage as fast as before it (its latency is logged, and only a
// delay a hundred times its usual one fails the test), and the one that
// was down gets them all once it is back.
func TestEndpointDownDoesNotDelayAnother(t *testing.T) {
	t.Parallel()
	const outage = 30 * time.Second
	s := startSystem(t, options{dispatcherEnv: map[string]string{
		// The slow endpoint's answers come within the timeout.
		"HTTP_TIMEOUT": "6s",
		// The down endpoint's events wait out the outage rather than run
		// out of attempts, and its breaker probes often enough to notice
		// it is back within seconds.
		"MAX_DELIVER": "1000", "BREAKER_FAILURES": "5", "BREAKER_COOLOFF": "1s", "BREAKER_COOLOFF_MAX": "2s",
	}})
	healthy, down, slow := newReceiver(t), newReceiver(t), newReceiver(t)
	subHealthy := s.subscribe(healthy, "order.paid")
	subDown := s.subscribe(down, "order.paid")
	s.subscribe(slow, "order.paid")

	// slowest is the healthy endpoint's slowest event, and how long its
	// POST /orders took.
	var slowest struct {
		id         string
		total, api time.Duration
	}
	// latency orders one event and waits for the healthy receiver to
	// accept it: from POST /orders to the webhook.
	latency := func(i int) (string, time.Duration) {
		ordered := time.Now()
		o := s.createOrder("", fmt.Sprintf("iso%d@example.com", i))
		api := time.Since(ordered)
		waitAccepted(t, healthy, "event "+o.EventID+" at the healthy receiver", o.EventID)
		d := healthy.of(o.EventID)[0].at.Sub(ordered)
		if d > slowest.total {
			slowest.id, slowest.total, slowest.api = o.EventID, d, api
		}
		return o.EventID, d
	}
	var before []time.Duration
	var baseline []string
	for i := range 5 {
		id, d := latency(i)
		before = append(before, d)
		baseline = append(baseline, id)
	}
	slowest.total = 0
	waitAccepted(t, down, "the events before the outage at the receiver to go down", baseline...)
	waitAccepted(t, slow, "the events before the outage at the receiver to slow down", baseline...)
	down.down()
	slow.answerAfter(5 * time.Second)
	start := time.Now()
	var during []time.Duration
	var outageEvents []string
	// An order every 250 ms, each timed on its own.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Since(start) < outage; i++ {
		<-tick.C
		id, d := latency(100 + i)
		during = append(during, d)
		outageEvents = append(outageEvents, id)
	}
	if n := len(down.deliveries()); n != 5 {
		t.Fatalf("the down receiver got %d requests, want only the 5 from before the outage", n)
	}
	if info := s.consumerInfo(subDown.ID); info == nil || info.NumAckPending+int(info.NumPending) == 0 {
		t.Fatalf("the down endpoint's consumer holds nothing for it: %+v", info)
	}
	t.Logf("healthy endpoint, from POST /orders to its webhook: before the outage %s; "+
		"during the 30 s outage of another and the slowness of a third (%d events) %s; the slow one had received %d of them",
		figures(before), len(during), figures(during), len(slow.accepted())-len(baseline))
	t.Logf("its slowest event during the outage took %s, of which POST /orders %s; %d attempts",
		slowest.total.Round(100*time.Microsecond), slowest.api.Round(100*time.Microsecond),
		len(s.admin().attempts(subHealthy.ID, "event_id="+url.QueryEscape(slowest.id))))
	// A few milliseconds as a rule, so the bound is a hundred times that:
	// only a healthy endpoint made to wait on the slow one's answers,
	// which take 5 s, comes near it.
	if p95 := quantile(during, 0.95); p95 > time.Second {
		t.Errorf("the healthy endpoint's 95th percentile latency was %s during the outage, against %s before",
			p95, quantile(before, 0.95))
	}

	down.up()
	waitAccepted(t, down, "every event of the outage at the endpoint that was down", outageEvents...)
	t.Logf("the endpoint that was down got all %d events of the outage %s after it came back",
		len(outageEvents), time.Since(start.Add(outage)).Round(time.Millisecond))
}

// figures summarises latencies: median, 95th percentile and maximum.
func figures(d []time.Duration) string {
	at := func(q float64) time.Duration { return quantile(d, q).Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %s, p95 %s, max %s", at(0.5), at(0.95), at(1))
}

// quantile returns the q-quantile of d, 0 ≤ q ≤ 1.
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// TestGoneDisables: a 410 Gone disables the subscription at once (reason
// gone) and pauses its consumer; the event that got it is a dead letter;
// the events after it wait in the consumer, and enabling the subscription
// delivers them.
func TestGoneDisables(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{})
	rc := newReceiver(t)
	rc.answer(http.StatusGone)
	sub := s.subscribe(rc, "order.paid")
	a := s.admin()

	first := s.createOrder("", "gone@example.com")
	eventually(t, 20*time.Second, "the subscription disabled as gone", func() bool {
		v := a.subscriptionOf(sub.ID)
		return v.Status == "disabled" && v.DisabledReason == "gone"
	})
	s.waitPaused(sub.ID, true)
	later := s.createOrder("", "later@example.com")
	// The later event is delivered to sub_notifier, and waits in the
	// disabled subscription's consumer.
	s.waitEmail(later.OrderID, 20*time.Second)
	eventually(t, 10*time.Second, "the later event pending in the paused consumer", func() bool {
		info := s.consumerInfo(sub.ID)
		return info != nil && info.Paused && info.NumPending == 1
	})
	if n := len(rc.deliveries()); n != 1 {
		t.Fatalf("%d requests while disabled, want only the one answered 410", n)
	}
	var dl struct {
		Data []struct {
			EventID    string `json:"event_id"`
			LastStatus int    `json:"last_status"`
		}
	}
	a.call(http.MethodGet, "/v1/subscriptions/"+sub.ID+"/dead-letters", "", http.StatusOK, &dl)
	if len(dl.Data) != 1 || dl.Data[0].EventID != first.EventID || dl.Data[0].LastStatus != http.StatusGone {
		t.Fatalf("dead letters = %+v, want the event answered 410", dl.Data)
	}
	if !s.announced("disabled", sub.ID) {
		t.Error("no OPS event ops.subscription.disabled." + sub.ID)
	}

	rc.answer(http.StatusOK)
	var enabled subscriptionView
	a.call(http.MethodPost, "/v1/subscriptions/"+sub.ID+"/enable", "", http.StatusOK, &enabled)
	if enabled.Status != "enabled" || enabled.DisabledReason != "" {
		t.Fatalf("enable answered %+v", enabled)
	}
	waitAccepted(t, rc, "the event that waited, once enabled", later.EventID)
	if n := len(rc.of(first.EventID)); n != 1 {
		t.Fatalf("the event answered 410 was sent %d times, want once (it is a dead letter)", n)
	}
	s.waitPaused(sub.ID, false)
}

// TestBreakerPausesAndResumes: after BREAKER_FAILURES failures in a row the
// subscription shows as paused, and so does its consumer on the server;
// nothing is sent during the cool-off; the first success after it
// resumes the consumer and enables the subscription again.
func TestBreakerPausesAndResumes(t *testing.T) {
	t.Parallel()
	const cooloff = 2 * time.Second
	s := startSystem(t, options{dispatcherEnv: map[string]string{
		"BREAKER_FAILURES": "3", "BREAKER_COOLOFF": cooloff.String(), "BREAKER_COOLOFF_MAX": "4s",
		"MAX_DELIVER": "100", "RETRY_BASE": "100ms", "RETRY_MAX": "200ms",
	}})
	rc := newReceiver(t)
	rc.answer(http.StatusServiceUnavailable)
	sub := s.subscribe(rc, "order.paid")
	a := s.admin()

	o := s.createOrder("", "breaker@example.com")
	eventually(t, 20*time.Second, "the subscription and its consumer paused", func() bool {
		info := s.consumerInfo(sub.ID)
		return a.subscriptionOf(sub.ID).Status == "paused" && info != nil && info.Paused
	})
	failures := rc.of(o.EventID)
	if len(failures) != 3 {
		t.Fatalf("%d attempts before the breaker opened, want BREAKER_FAILURES = 3", len(failures))
	}
	info := s.consumerInfo(sub.ID)
	if info.Config.PauseUntil == nil || time.Until(*info.Config.PauseUntil) > cooloff {
		t.Fatalf("consumer paused until %v, want within the %s cool-off", info.Config.PauseUntil, cooloff)
	}
	if !s.announced("paused", sub.ID) {
		t.Error("no OPS event ops.subscription.paused." + sub.ID)
	}

	rc.answer(http.StatusOK)
	eventually(t, 20*time.Second, "the subscription enabled again by a success", func() bool {
		return a.subscriptionOf(sub.ID).Status == "enabled" && rc.accepted()[o.EventID] == 1
	})
	s.waitPaused(sub.ID, false)
	got := rc.of(o.EventID)
	// The margin allows for the clocks of the pause being read a little
	// apart; a probe sent with the breaker open would come at once.
	if gap := got[len(got)-1].at.Sub(failures[2].at); gap < cooloff-300*time.Millisecond {
		t.Fatalf("the probe came %s after the third failure, within the %s cool-off", gap, cooloff)
	}
	if len(got) != 4 {
		t.Fatalf("%d requests, want 3 failures and the probe that succeeded", len(got))
	}
	if !s.announced("recovered", sub.ID) {
		t.Error("no OPS event ops.subscription.recovered." + sub.ID)
	}
}

// TestDeadLettersReplayedOnce: events that ran out of attempts are dead
// letters; replaying them twice delivers each once more in all, to their
// subscription only, and leaves no dead letter.
func TestDeadLettersReplayedOnce(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{dispatcherEnv: map[string]string{
		"MAX_DELIVER": "2", "RETRY_BASE": "50ms", "RETRY_MAX": "100ms", "BREAKER_FAILURES": "100",
	}})
	rc := newReceiver(t)
	rc.answer(http.StatusInternalServerError)
	sub := s.subscribe(rc, "order.paid")
	a := s.admin()
	path := "/v1/subscriptions/" + sub.ID

	var events []string
	for i := range 3 {
		events = append(events, s.createOrder("", fmt.Sprintf("dl%d@example.com", i)).EventID)
	}
	type deadLetter struct {
		EventID    string `json:"event_id"`
		Attempts   int    `json:"attempts"`
		LastStatus int    `json:"last_status"`
	}
	var dl struct{ Data []deadLetter }
	eventually(t, 20*time.Second, "three dead letters", func() bool {
		a.call(http.MethodGet, path+"/dead-letters", "", http.StatusOK, &dl)
		return len(dl.Data) == len(events)
	})
	for _, d := range dl.Data {
		if !slices.Contains(events, d.EventID) || d.Attempts != 2 || d.LastStatus != 500 {
			t.Fatalf("dead letter %+v, want one of %v after MAX_DELIVER = 2 attempts answered 500", d, events)
		}
	}

	rc.answer(http.StatusOK)
	var first, second struct{ Replayed int }
	a.call(http.MethodPost, path+"/dead-letters/replay", `{}`, http.StatusAccepted, &first)
	a.call(http.MethodPost, path+"/dead-letters/replay", `{}`, http.StatusAccepted, &second)
	if first.Replayed != len(events) || second.Replayed != 0 {
		t.Fatalf("replays answered %d and %d, want %d and then 0", first.Replayed, second.Replayed, len(events))
	}
	waitAccepted(t, rc, "every replayed event", events...)
	s.drainRedeliveries()
	a.call(http.MethodGet, path+"/dead-letters", "", http.StatusOK, &dl)
	if len(dl.Data) != 0 {
		t.Fatalf("dead letters after the replay: %+v", dl.Data)
	}
	for _, id := range events {
		if n, accepted := len(rc.of(id)), rc.accepted()[id]; n != 3 || accepted != 1 {
			t.Errorf("event %s: %d requests, %d accepted; want the 2 failed attempts and one replay", id, n, accepted)
		}
		replays := 0
		for _, r := range a.attempts(sub.ID, "event_id="+url.QueryEscape(id)) {
			if r.Source == "replay" && r.Outcome == "delivered" {
				replays++
			}
		}
		if replays != 1 {
			t.Errorf("event %s: %d delivered replays in the attempt log, want 1", id, replays)
		}
		// sub_notifier got it the first time; a replay is for one
		// subscription only.
		if n := len(s.proxy.attemptsFor(id)); n != 1 {
			t.Errorf("event %s went %d times to sub_notifier, want once", id, n)
		}
	}
}

// drainRedeliveries waits until the redeliver consumer has settled all
// that REDELIVERIES held: after that, no further replay or recovery
// arrives.
func (s *system) drainRedeliveries() {
	s.t.Helper()
	eventually(s.t, 20*time.Second, "REDELIVERIES to drain", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := s.js.Consumer(ctx, natsx.StreamRedeliveries, natsx.ConsumerRedeliver)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// TestRecoverRedeliversARange: a recovery job over a time range delivers
// every matching event of the range once more to its subscription, and
// none outside it; GET /v1/jobs/{id} reaches done with total = delivered.
func TestRecoverRedeliversARange(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{})
	rc := newReceiver(t)
	sub := s.subscribe(rc, "order.paid")
	a := s.admin()

	before := s.createOrder("", "before@example.com").EventID
	since := time.Now()
	var in []string
	for i := range 3 {
		in = append(in, s.createOrder("", fmt.Sprintf("in%d@example.com", i)).EventID)
	}
	until := time.Now()
	after := s.createOrder("", "after@example.com").EventID
	all := append([]string{before, after}, in...)
	waitAccepted(t, rc, "every event delivered once", all...)

	var job struct {
		JobID string `json:"job_id"`
	}
	a.call(http.MethodPost, "/v1/subscriptions/"+sub.ID+"/recover",
		`{"since":"`+since.UTC().Format(time.RFC3339Nano)+`","until":"`+until.UTC().Format(time.RFC3339Nano)+`"}`, http.StatusAccepted, &job)
	var st struct {
		State     string `json:"state"`
		Total     int    `json:"total"`
		Delivered int    `json:"delivered"`
		Error     string `json:"error"`
	}
	eventually(t, 30*time.Second, "the job done with every event delivered", func() bool {
		a.call(http.MethodGet, "/v1/jobs/"+job.JobID, "", http.StatusOK, &st)
		if st.State == "failed" {
			t.Fatalf("the job failed: %s", st.Error)
		}
		return st.State == "done" && st.Delivered == st.Total
	})
	if st.Total != len(in) {
		t.Fatalf("the job counted %d events in the range, want %d", st.Total, len(in))
	}
	s.drainRedeliveries()
	got := rc.accepted()
	for _, id := range in {
		if got[id] != 2 {
			t.Errorf("event %s in the range delivered %d times, want twice (once recovered)", id, got[id])
		}
		if n := len(s.proxy.attemptsFor(id)); n != 1 {
			t.Errorf("event %s went %d times to sub_notifier, want once: a recovery is for one subscription", id, n)
		}
		recovered := 0
		for _, r := range a.attempts(sub.ID, "event_id="+url.QueryEscape(id)) {
			if r.Source == "recover" && r.Outcome == "delivered" {
				recovered++
			}
		}
		if recovered != 1 {
			t.Errorf("event %s: %d delivered recoveries in the attempt log, want 1", id, recovered)
		}
	}
	for _, id := range []string{before, after} {
		if got[id] != 1 {
			t.Errorf("event %s outside the range delivered %d times, want once", id, got[id])
		}
	}
}
