package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jethook/jethook/shared/backoff"
)

// clientTimeout bounds one POST /orders, as a careful client's HTTP
// timeout does; the orders service's own PUBLISH_TIMEOUT is shorter, so it
// normally answers 503 before the client gives up.
const clientTimeout = 3 * time.Second

// One order in refusableEvery goes to an address of refusableDomain, which
// the mail relay refuses for good (550 at RCPT TO) during an smtp:reject
// window, as a suppression list or a sandbox does: those emails must end
// in DEADLETTER, not vanish, and must not hold back the others.
const (
	refusableDomain = "refusable.example.com"
	refusableEvery  = 5
)

// customerEmail is the address of the load's order n.
func customerEmail(n int) string {
	if n%refusableEvery == 0 {
		return fmt.Sprintf("c%d@%s", n, refusableDomain)
	}
	return fmt.Sprintf("c%d@example.com", n)
}

// refusable reports whether the relay may refuse addr for good.
func refusable(addr string) bool { return strings.HasSuffix(addr, "@"+refusableDomain) }

// maxOpenFactor bounds the orders waiting for their 201 to this many
// seconds of load: beyond that the generator skips orders instead of piling
// up goroutines while the orders service is down.
const maxOpenFactor = 30

// placed is one logical order of the load: one Idempotency-Key, retried
// until answered 201.
type placed struct {
	n     int
	key   string
	email string
	// orderID, eventID and acked are set by the first 201.
	orderID, eventID string
	acked            time.Time
	// attempts counts the POSTs sent.
	attempts int
	// rejected is the answer to a POST that must not be retried (4xx).
	rejected string
	lastErr  string
}

// loadGen creates orders at a steady rate, each with its own
// Idempotency-Key, and retries each until it is answered 201.
type loadGen struct {
	url    string
	seed   int64
	rate   float64
	client *http.Client

	mu     sync.Mutex
	orders []*placed
	open   atomic.Int64
	skips  atomic.Int64
	wg     sync.WaitGroup
}

func newLoadGen(ordersURL string, seed int64, rate float64) *loadGen {
	return &loadGen{
		url:    ordersURL + "/orders",
		seed:   seed,
		rate:   rate,
		client: &http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

// run starts new orders at random moments, rate per second on average,
// until load ends. The gaps are exponential, as between independent
// clients, so that the moment a fault hits is not locked to the rhythm of
// the orders. Each order is retried until it gets its 201 or resolve ends;
// resolve outlives load, so that orders in doubt when the load stops are
// settled. run returns when every order has been settled or given up.
func (g *loadGen) run(load, resolve context.Context) {
	maxOpen := int64(max(maxOpenFactor*g.rate, 10))
	mean := float64(time.Second) / g.rate
	for n := 1; ; n++ {
		if !sleep(load, time.Duration(rand.ExpFloat64()*mean)) {
			g.wg.Wait()
			g.client.CloseIdleConnections()
			return
		}
		if g.open.Load() >= maxOpen {
			g.skips.Add(1)
			continue
		}
		o := &placed{n: n, key: fmt.Sprintf("chaos-%d-%d", g.seed, n), email: customerEmail(n)}
		g.mu.Lock()
		g.orders = append(g.orders, o)
		g.mu.Unlock()
		g.open.Add(1)
		g.wg.Go(func() {
			defer g.open.Add(-1)
			g.place(resolve, o)
		})
	}
}

// place posts o until it is answered 201, a 4xx that no retry can change,
// or ctx ends, waiting a growing, jittered delay between attempts.
func (g *loadGen) place(ctx context.Context, o *placed) {
	body := fmt.Sprintf(`{"product_name":"Chaos book %d","quantity":1,"price_per_item":"12.34","customer_email":%q}`, o.n, o.email)
	for attempt := uint64(1); ; attempt++ {
		status, created, err := g.post(ctx, o.key, body)
		g.mu.Lock()
		o.attempts++
		switch {
		case status == http.StatusCreated:
			o.orderID, o.eventID, o.acked = created.OrderID, created.EventID, time.Now()
		case err != nil:
			o.lastErr = err.Error()
		case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			o.rejected = fmt.Sprintf("%d", status)
		default:
			o.lastErr = fmt.Sprintf("status %d", status)
		}
		done := o.orderID != "" || o.rejected != ""
		g.mu.Unlock()
		if done {
			return
		}
		t := time.NewTimer(backoff.Exponential(100*time.Millisecond, time.Second, attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// created is what a 201 says of the order.
type created struct {
	OrderID string `json:"order_id"`
	EventID string `json:"event_id"`
}

func (g *loadGen) post(ctx context.Context, key, body string) (int, created, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url, strings.NewReader(body))
	if err != nil {
		return 0, created{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, created{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, created{}, err
	}
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, created{}, nil
	}
	var c created
	if err := json.Unmarshal(b, &c); err != nil || c.OrderID == "" || c.EventID == "" {
		return 0, created{}, fmt.Errorf("201 without an order or event id: %q", b)
	}
	return resp.StatusCode, c, nil
}

// loadStats is a snapshot of the load.
type loadStats struct {
	created, acked, open, rejected int
}

func (g *loadGen) stats() loadStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := loadStats{created: len(g.orders), open: int(g.open.Load())}
	for _, o := range g.orders {
		switch {
		case o.orderID != "":
			s.acked++
		case o.rejected != "":
			s.rejected++
		}
	}
	return s
}

// snapshot returns copies of every order.
func (g *loadGen) snapshot() []placed {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]placed, len(g.orders))
	for i, o := range g.orders {
		out[i] = *o
	}
	return out
}
