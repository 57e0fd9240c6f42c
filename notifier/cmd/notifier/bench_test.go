package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jethook/jethook/notifier/internal/receive"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/webhook"
)

// BenchmarkWebhookToEmail measures the notifier alone: b.N signed webhooks
// posted at a concurrency of 32, each received, queued and logged as an
// email (no relay), timed until NOTIFICATIONS is empty. The notifier runs
// in this process beside an embedded nats-server, so the profile shows
// both.
func BenchmarkWebhookToEmail(b *testing.B) {
	t := &testing.T{}
	srv := natstest.RunServer(t)
	s := startNotifier(t, map[string]string{"NATS_URL": srv.URL(), "LOG_FORMAT": "json"})
	s.waitReady(t)
	_, js := natstest.Connect(t, srv.URL())
	secrets, _ := webhook.ParseSecrets(testSecret)
	bodies := make([][]byte, b.N)
	ids := make([]string, b.N)
	for i := range b.N {
		ev := testkit.OrderPaid(b)
		ids[i] = ev.ID
		bodies[i], _ = ev.Marshal()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, s.base+receive.Path, bytes.NewReader(bodies[i]))
				req.Header.Set("Content-Type", "application/json")
				webhook.SetHeaders(req.Header, secrets, ids[i], time.Now(), bodies[i])
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	ctx := context.Background()
	for {
		st, err := js.Stream(ctx, natsx.StreamNotifications)
		if err == nil {
			if info, err := st.Info(ctx); err == nil && info.State.Msgs == 0 && info.State.LastSeq >= uint64(b.N) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
	s.stop()
	_ = s.wait(t, 15*time.Second)
}
