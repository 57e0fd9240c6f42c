package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/platform"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
)

// TestRunWiresThePlatform: at start the dispatcher provisions the
// platform's streams and the jobs bucket, runs recovery jobs, and serves
// the routes that read and write them.
func TestRunWiresThePlatform(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, js := natstest.Connect(t, srv.URL())
	addr, _ := started(t, map[string]string{
		"NATS_URL": srv.URL(), "DISPATCHER_ADDR": "127.0.0.1:0",
		"NOTIFICATION_WEBHOOK_URL": "http://127.0.0.1:1/webhook/order-paid", "WEBHOOK_SECRET": mustSecret(t),
	})
	eventually(t, 10*time.Second, "the platform's streams and bucket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return natsx.Check(ctx, nc, js, platform.Requirement()) == nil
	})
	call := func(method, path, body string) (int, []byte) {
		return adminRequest(method, "http://"+addr+path, required["ADMIN_TOKEN"], body)
	}
	eventually(t, 10*time.Second, "sub_notifier", func() bool {
		code, _ := call("GET", "/v1/subscriptions/sub_notifier", "")
		return code == http.StatusOK
	})
	// A recovery job runs to its end on this replica.
	since := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	code, body := call("POST", "/v1/subscriptions/sub_notifier/recover", `{"since":"`+since+`"}`)
	var job struct {
		JobID string `json:"job_id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(body, &job); code != http.StatusAccepted || err != nil {
		t.Fatalf("recover = %d %s", code, body)
	}
	eventually(t, 20*time.Second, "the recovery job to be done", func() bool {
		code, body := call("GET", "/v1/jobs/"+job.JobID, "")
		return code == http.StatusOK && json.Unmarshal(body, &job) == nil && job.State == "done"
	})
	// A ping goes out (to a port where nothing listens) and is logged.
	code, body = call("POST", "/v1/subscriptions/sub_notifier/ping", "")
	if code != http.StatusAccepted || !strings.Contains(string(body), `"outcome":"failed"`) || !strings.Contains(string(body), `"source":"ping"`) {
		t.Fatalf("ping = %d %s", code, body)
	}
	eventually(t, 10*time.Second, "the ping's attempt", func() bool {
		code, body := call("GET", "/v1/subscriptions/sub_notifier/attempts", "")
		return code == http.StatusOK && strings.Contains(string(body), `"source":"ping"`)
	})
	for _, path := range []string{"/v1/subscriptions/sub_notifier/dead-letters", "/v1/events/evt_1/attempts"} {
		if code, body := call("GET", path, ""); code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, code, body)
		}
	}
}
