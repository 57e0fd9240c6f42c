package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/natsx"
)

// adminToken is the dispatchers' ADMIN_TOKEN in a run.
const adminToken = "chaos-admin-token-0123456789abcdef012"

// throttledRate is sub_notifier's rate_limit_per_s during an
// admin:throttle window: per dispatcher process, well below the load, so
// that most deliveries wait for the limiter past their message timeout and
// are held.
const throttledRate = 1

// notifierSubscription is the subscription the dispatchers deliver to the
// notifiers through.
const notifierSubscription = "sub_notifier"

// setRateLimit sets sub_notifier's rate_limit_per_s through the admin API
// of whichever dispatcher answers (one may be down for a fault of its
// own), and returns the value it replaced: the one its first successful
// read saw, since a patch whose answer was lost may still have been
// applied, and a later read would see the new value. It tries for up to
// 15 s.
func (h *harness) setRateLimit(ctx context.Context, rate int) (prev int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	prev = -1
	for {
		for _, base := range h.dispatcherURLs {
			var seen int
			seen, err = patchRateLimit(ctx, base, rate)
			if prev < 0 && seen > 0 {
				prev = seen
			}
			if err == nil {
				return prev, nil
			}
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return 0, fmt.Errorf("no dispatcher took the change: %w", err)
		}
	}
}

// patchRateLimit reads sub_notifier from one dispatcher and patches its
// rate_limit_per_s, guarded by the ETag it read. It returns the value it
// read, 0 when the read failed, also when the patch then fails.
func patchRateLimit(ctx context.Context, base string, rate int) (int, error) {
	url := base + "/v1/subscriptions/" + notifierSubscription
	get, err := adminRequest(ctx, http.MethodGet, url, "", nil)
	if err != nil {
		return 0, err
	}
	defer get.Body.Close()
	var sub struct {
		RateLimitPerS int `json:"rate_limit_per_s"`
	}
	if get.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, get.Status)
	}
	if err := json.NewDecoder(get.Body).Decode(&sub); err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	body := []byte(`{"rate_limit_per_s":` + strconv.Itoa(rate) + `}`)
	patch, err := adminRequest(ctx, http.MethodPatch, url, get.Header.Get("ETag"), body)
	if err != nil {
		return sub.RateLimitPerS, err
	}
	patch.Body.Close()
	if patch.StatusCode != http.StatusOK {
		return sub.RateLimitPerS, fmt.Errorf("PATCH %s: %s", url, patch.Status)
	}
	return sub.RateLimitPerS, nil
}

func adminRequest(ctx context.Context, method, url, ifMatch string, body []byte) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// cancelOnClose ends a request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// attemptsOf is what sub_notifier's attempt log says of one event.
type attemptsOf struct {
	// highest is the highest attempt number recorded; unanswered counts
	// the attempts recorded without an HTTP status (a timeout, a refused
	// connection), which may never have reached the receiver.
	highest, unanswered uint64
}

// readAttempts reads sub_notifier's attempt log, per event id.
func (h *harness) readAttempts(ctx context.Context) (map[string]attemptsOf, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cons, err := h.js.OrderedConsumer(ctx, natsx.StreamAttempts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{natsx.AttemptFilter(notifierSubscription)},
	})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	byEvent := map[string]attemptsOf{}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var rec struct {
				EventID string `json:"event_id"`
				Attempt uint64 `json:"attempt"`
				Status  int    `json:"status"`
			}
			if json.Unmarshal(m.Data(), &rec) == nil {
				a := byEvent[rec.EventID]
				a.highest = max(a.highest, rec.Attempt)
				if rec.Status == 0 {
					a.unanswered++
				}
				byEvent[rec.EventID] = a
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if got == 0 {
			return nil, errors.New("the attempt log stopped short of its end")
		}
		left -= uint64(got)
	}
	return byEvent, nil
}
