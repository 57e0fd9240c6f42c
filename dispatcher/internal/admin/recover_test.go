package admin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/webhook"
)

type jobJSON struct {
	JobID          string    `json:"job_id"`
	SubscriptionID string    `json:"subscription_id"`
	State          string    `json:"state"`
	Since          time.Time `json:"since"`
	Until          time.Time `json:"until"`
	Total          *int64    `json:"total"`
	Enqueued       int64     `json:"enqueued"`
	Delivered      *int64    `json:"delivered"`
	Error          string    `json:"error"`
}

// TestRecover: a recovery over a range is a job, readable at its
// Location, that enqueues the range's events and counts what the
// redeliver consumer reports delivered.
func TestRecover(t *testing.T) {
	a := startAPI(t)
	s, _ := a.create(validBody)
	a.env.Publish(t, platformtest.Events(t, 2)...)
	since := time.Now()
	a.env.Publish(t, platformtest.Events(t, 6)...)
	until := time.Now()
	a.env.Publish(t, platformtest.Events(t, 1)...)

	r := a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/recover",
		body: `{"since":"` + since.Format(time.RFC3339Nano) + `","until":"` + until.Format(time.RFC3339Nano) + `"}`})
	created := decode[struct {
		JobID string `json:"job_id"`
	}](t, r, 202)
	loc := r.header.Get("Location")
	if !strings.HasPrefix(created.JobID, "job_") || loc != "/v1/jobs/"+created.JobID || strings.Count(string(r.body), `":`) != 1 {
		t.Fatalf("recover = %s, Location %q", r.body, loc)
	}
	var j jobJSON
	testkit.Eventually(t, 20*time.Second, "the job to be done", func() bool {
		j = decode[jobJSON](t, a.do(request{method: "GET", path: loc}), 200)
		return j.State != "running"
	})
	if j.State != "done" || j.Total == nil || *j.Total != 6 || j.Enqueued != 6 || j.Delivered == nil || *j.Delivered != 0 ||
		j.SubscriptionID != s.ID || !j.Since.Equal(since) || !j.Until.Equal(until) || j.Error != "" {
		t.Fatalf("job %+v", j)
	}
	if n := a.env.Count(t, natsx.StreamRedeliveries, "redeliver.>"); n != 6 {
		t.Fatalf("%d redeliveries, want 6", n)
	}
	for range 4 {
		a.jobs.Delivered(created.JobID)
	}
	testkit.Eventually(t, 10*time.Second, "4 deliveries counted", func() bool {
		j = decode[jobJSON](t, a.do(request{method: "GET", path: loc}), 200)
		return *j.Delivered == 4
	})

	// Without until: up to now.
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/recover",
		body: `{"since":"` + since.Add(-time.Minute).UTC().Format(time.RFC3339) + `"}`})
	decode[struct{ JobID string }](t, r, 202)
}

// TestPing: the endpoint gets a signed webhook.test at once, the answer
// is its attempt, and the attempt log has it.
func TestPing(t *testing.T) {
	a := startAPI(t)
	var mu sync.Mutex
	var got event.WebhookTest
	var v webhook.Verifier
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := v.Verify(r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), body); err != nil {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_ = json.Unmarshal(body, &got)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer receiver.Close()
	s, _ := a.create(`{"url":"` + receiver.URL + `/hook","event_types":["order.paid"]}`)
	// The secret as the API shows it.
	sv := decode[struct {
		Secrets []struct{ Secret string } `json:"secrets"`
	}](t, a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"}), 200)
	secret, err := webhook.ParseSecret(sv.Secrets[0].Secret)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	v = webhook.Verifier{Secrets: []webhook.Secret{secret}}
	mu.Unlock()

	r := a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/ping"})
	p := decode[attemptJSON](t, r, 202)
	mu.Lock()
	received := got
	mu.Unlock()
	if p.Status != 200 || p.Outcome != "delivered" || p.Source != "ping" || p.Response != `{"ok":true}` ||
		p.EventID != received.ID || received.Type != "webhook.test" || received.Data.SubscriptionID != s.ID {
		t.Fatalf("ping = %s; the receiver got %+v", r.body, received)
	}
	testkit.Eventually(t, 10*time.Second, "the ping in the attempt log", func() bool {
		l := decode[listOf[attemptJSON]](t, a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID + "/attempts?event_id=" + p.EventID}), 200)
		return len(l.Data) == 1 && l.Data[0].Source == "ping"
	})
	// A disabled subscription can be pinged too: checking an endpoint
	// before enabling it again is what ping is for.
	a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/disable"})
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/ping", body: `{}`})
	if p := decode[attemptJSON](t, r, 202); p.Outcome != "delivered" {
		t.Fatalf("ping of a disabled subscription = %s", r.body)
	}
}
