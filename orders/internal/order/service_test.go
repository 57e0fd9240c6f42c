package order_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/orders/internal/store"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

var errCrash = errors.New("simulated crash")

// crashAfterPublish publishes for real, then fails as a process killed
// right after the PubAck (before the answer and the order record) would.
type crashAfterPublish struct{ order.EventPublisher }

func (p crashAfterPublish) PublishOrderPaid(ctx context.Context, e event.OrderPaid, createdAt time.Time) (bool, error) {
	if _, err := p.EventPublisher.PublishOrderPaid(ctx, e, createdAt); err != nil {
		return false, err
	}
	return false, errCrash
}

// crashBeforePublish fails without publishing, as a process killed after
// the idempotency key was bound and before the event reached the stream
// would, or as a NATS outage at that moment does. It remembers the orders
// it was asked to publish.
type crashBeforePublish struct{ orderIDs *[]string }

func (p crashBeforePublish) PublishOrderPaid(_ context.Context, e event.OrderPaid, _ time.Time) (bool, error) {
	if p.orderIDs != nil {
		*p.orderIDs = append(*p.orderIDs, e.Data.OrderID)
	}
	return false, errCrash
}

// noRecord drops every record write, as a process killed right after the
// PubAck, or NATS going away then, would.
type noRecord struct{ order.Store }

func (noRecord) Record(order.Order) {}

func setup(t *testing.T, duplicates time.Duration) (*store.JetStream, jetstream.Stream, jetstream.JetStream) {
	t.Helper()
	ns := natstest.RunServer(t)
	nc, js := natstest.Connect(t, ns.URL())
	ctx := context.Background()
	cfg := natsx.OrdersStream(1)
	cfg.Duplicates = duplicates
	if err := natsx.Provision(ctx, js, []jetstream.StreamConfig{cfg},
		[]jetstream.KeyValueConfig{natsx.OrdersBucket(1), natsx.OrdersIdempotencyBucket(1, time.Hour)}); err != nil {
		t.Fatal(err)
	}
	orders, _ := js.KeyValue(ctx, natsx.BucketOrders)
	keys, _ := js.KeyValue(ctx, natsx.BucketOrdersIdempotency)
	st, err := js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.New(ctx, nc, js, orders, keys, 5*time.Second, logger())
	if err != nil {
		t.Fatal(err)
	}
	return s, st, js
}

func request(t *testing.T) order.Request {
	t.Helper()
	r, err := order.ParseRequest([]byte(`{"product_name":"Book","quantity":2,"price_per_item":10.5,"customer_email":"ada@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func msgs(t *testing.T, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func logger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// service is an order service on s, publishing through p.
func service(s order.Store, p order.EventPublisher, events order.EventFinder) *order.Service {
	return &order.Service{Store: s, Publisher: p, Events: events, Payer: order.SimulatedPayer{}, Logger: logger(),
		EventRetention: natsx.OrdersStream(1).MaxAge}
}

func TestResumeAfterCrash(t *testing.T) {
	tests := []struct {
		name       string
		duplicates time.Duration
		// waitPastWindow lets the JetStream duplicate window lapse before the
		// retry, so only the per-subject expectation can stop a second event.
		waitPastWindow bool
		crashBefore    bool
	}{
		{"crash after PubAck, retry inside the duplicate window", 2 * time.Minute, false, false},
		{"crash after PubAck, retry after the duplicate window", 200 * time.Millisecond, true, false},
		{"crash before the event was stored", 2 * time.Minute, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, st, client := setup(t, tt.duplicates)
			ctx := context.Background()
			first := service(js, crashAfterPublish{js}, js)
			wantEvents := uint64(1)
			if tt.crashBefore {
				first, wantEvents = service(js, crashBeforePublish{}, js), 0
			}
			if _, _, err := first.Create(ctx, request(t), "key-a"); !errors.Is(err, errCrash) {
				t.Fatalf("first attempt = %v, want the simulated crash", err)
			}
			if n := msgs(t, st); n != wantEvents {
				t.Fatalf("after the crash ORDERS holds %d events, want %d", n, wantEvents)
			}
			if tt.waitPastWindow {
				// Ten windows: the server forgets ids on a timer, which a
				// loaded machine may run late.
				time.Sleep(10 * tt.duplicates)
			}
			retry := service(js, js, js)
			o, replayed, err := retry.Create(ctx, request(t), "key-a")
			if err != nil || !replayed || o.Status != order.StatusPaid {
				t.Fatalf("retry = %+v, replayed=%v, %v", o, replayed, err)
			}
			if n := msgs(t, st); n != 1 {
				t.Fatalf("after the retry ORDERS holds %d events, want exactly 1", n)
			}
			m, err := st.GetLastMsgForSubject(ctx, event.Subject(o.OrderID))
			if err != nil || m.Header.Get("Nats-Msg-Id") != o.EventID {
				t.Fatalf("event for %s: %v %v", o.OrderID, m, err)
			}
			again, _, err := retry.Create(ctx, request(t), "key-a")
			if err != nil || again.OrderID != o.OrderID || again.EventID != o.EventID {
				t.Fatalf("third attempt = %+v, %v", again, err)
			}
			if tt.waitPastWindow {
				// The same event without the per-subject expectation is not
				// a duplicate any more: the window really lapsed, and only
				// the expectation kept the retry from storing it again.
				ack, err := client.Publish(ctx, event.Subject(o.OrderID), m.Data, jetstream.WithMsgID(o.EventID))
				if err != nil || ack.Duplicate {
					t.Fatalf("publishing the event again without the expectation = %+v, %v; want it stored, not a duplicate", ack, err)
				}
			}
		})
	}
}

// TestConcurrentRetriesMakeOneOrder: requests with the same key at the
// same moment, as a client that retries before its first attempt was
// answered sends them, get one order and store one event.
func TestConcurrentRetriesMakeOneOrder(t *testing.T) {
	js, st, _ := setup(t, 2*time.Minute)
	svc := service(js, js, js)
	const n = 20
	got := make([]order.Order, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], _, errs[i] = svc.Create(context.Background(), request(t), "key-race") })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i].OrderID != got[0].OrderID || got[i].EventID != got[0].EventID || got[i].Status != order.StatusPaid {
			t.Fatalf("request %d = %+v, %v; request 0 = %+v", i, got[i], errs[i], got[0])
		}
	}
	if m := msgs(t, st); m != 1 {
		t.Fatalf("ORDERS holds %d events for one key, want 1", m)
	}
}

// TestResumedOrderPublishesAFreshEvent: an order whose first attempt never
// stored its event, resumed with its Idempotency-Key days later (the key
// lives up to IDEMPOTENCY_TTL, 30 days at most), keeps its ids and creation
// time, but its event carries the time it is published: the notifier
// refuses events older than PROCESSED_TTL (72 h by default), and the
// order's own email must not be refused.
func TestResumedOrderPublishesAFreshEvent(t *testing.T) {
	js, st, _ := setup(t, 2*time.Minute)
	ctx := context.Background()
	created := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	clock := created
	first := service(js, crashBeforePublish{}, js)
	first.Now = func() time.Time { return clock }
	if _, _, err := first.Create(ctx, request(t), "key-late"); !errors.Is(err, errCrash) {
		t.Fatalf("first attempt = %v, want the simulated crash", err)
	}

	clock = created.Add(96 * time.Hour)
	retry := service(js, js, js)
	retry.Now = func() time.Time { return clock }
	o, replayed, err := retry.Create(ctx, request(t), "key-late")
	if err != nil || !replayed || !o.CreatedAt.Equal(created) {
		t.Fatalf("retry = %+v, replayed=%v, %v; want the order created at %s", o, replayed, err, created)
	}
	m, err := st.GetLastMsgForSubject(ctx, event.Subject(o.OrderID))
	if err != nil {
		t.Fatal(err)
	}
	e, err := event.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Timestamp.Equal(clock) {
		t.Fatalf("the resumed order's event says %s, want the time it was published, %s (a receiver keeping 72 h refuses an event from %s)",
			e.Timestamp, clock, created)
	}
}

// TestOldKeyOfAnUnconfirmedOrder: a key retried after the stream may have
// forgotten the order's event cannot tell a never-published order from one
// whose event aged out, so it is refused rather than published a second
// time; a paid order is answered from its record.
func TestOldKeyOfAnUnconfirmedOrder(t *testing.T) {
	js, st, _ := setup(t, 2*time.Minute)
	ctx := context.Background()
	created := time.Now().Add(-8 * 24 * time.Hour).UTC().Truncate(time.Second)
	then := service(js, crashBeforePublish{}, js)
	then.Now = func() time.Time { return created }
	if _, _, err := then.Create(ctx, request(t), "key-old"); !errors.Is(err, errCrash) {
		t.Fatalf("first attempt = %v, want the simulated crash", err)
	}
	if _, _, err := service(js, js, js).Create(ctx, request(t), "key-old"); !errors.Is(err, order.ErrKeyTooOld) {
		t.Fatalf("retry 8 days later = %v, want ErrKeyTooOld", err)
	}
	if n := msgs(t, st); n != 0 {
		t.Fatalf("ORDERS holds %d events, want none", n)
	}

	paid := service(js, js, js)
	paid.Now = func() time.Time { return created }
	o, _, err := paid.Create(ctx, request(t), "key-paid")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the paid order's record", func() bool {
		got, err := js.Get(ctx, o.OrderID)
		return err == nil && got.Status == order.StatusPaid
	})
	got, replayed, err := service(js, js, js).Create(ctx, request(t), "key-paid")
	if err != nil || !replayed || got.OrderID != o.OrderID || got.Status != order.StatusPaid {
		t.Fatalf("retry of the paid order 8 days later = %+v, replayed=%v, %v", got, replayed, err)
	}
	if n := msgs(t, st); n != 1 {
		t.Fatalf("ORDERS holds %d events, want the paid order's one", n)
	}
}

// TestGetRepairsAMissingRecord: the process died after the PubAck and
// before the order's record was written. GET answers from the stream (paid,
// since the email is on its way) and writes the record; so it does for a
// record an earlier version left pending; an order whose event never made
// it is not found.
func TestGetRepairsAMissingRecord(t *testing.T) {
	js, _, client := setup(t, 2*time.Minute)
	ctx := context.Background()
	published, _, err := service(noRecord{js}, js, js).Create(ctx, request(t), "")
	if err != nil {
		t.Fatalf("Create = %v", err)
	}
	if _, err := js.Get(ctx, published.OrderID); !errors.Is(err, order.ErrNotFound) {
		t.Fatalf("record of the published order = %v; the test needs it missing", err)
	}
	reader := service(js, js, js)
	got, err := reader.Get(ctx, published.OrderID)
	if err != nil || got != published {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, published)
	}
	testkit.Eventually(t, 10*time.Second, "the repaired record", func() bool {
		stored, err := js.Get(ctx, published.OrderID)
		return err == nil && stored == published
	})

	legacy, _, err := service(noRecord{js}, js, js).Create(ctx, request(t), "")
	if err != nil {
		t.Fatal(err)
	}
	pending := legacy
	pending.Status = order.StatusPending
	kv, err := client.KeyValue(ctx, natsx.BucketOrders)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pending)
	if _, err := kv.Put(ctx, legacy.OrderID, raw); err != nil {
		t.Fatal(err)
	}
	if got, err := reader.Get(ctx, legacy.OrderID); err != nil || got != legacy {
		t.Fatalf("Get of a pending record whose event is stored = %+v, %v; want %+v", got, err, legacy)
	}
	testkit.Eventually(t, 10*time.Second, "the pending record marked paid", func() bool {
		stored, err := js.Get(ctx, legacy.OrderID)
		return err == nil && stored.Status == order.StatusPaid
	})

	var unpublished []string
	if _, _, err := service(js, crashBeforePublish{&unpublished}, js).Create(ctx, request(t), "key-c"); !errors.Is(err, errCrash) || len(unpublished) != 1 {
		t.Fatalf("Create with a failing publisher = %v, asked to publish %v", err, unpublished)
	}
	if got, err := reader.Get(ctx, unpublished[0]); !errors.Is(err, order.ErrNotFound) {
		t.Fatalf("Get of an order whose event never made it = %+v, %v; want not found", got, err)
	}
}

func TestParseRequestExactMoney(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		total int64
	}{
		{"float trap as number", `{"product_name":"x","quantity":3,"price_per_item":0.1,"customer_email":"a@b.co"}`, 30},
		{"decimal string", `{"product_name":"x","quantity":1,"price_per_item":"19.99","customer_email":"a@b.co"}`, 1999},
		{"trailing zeros", `{"product_name":"x","quantity":1,"price_per_item":15.000,"customer_email":"a@b.co"}`, 1500},
		{"zero-decimal currency", `{"product_name":"x","quantity":2,"price_per_item":500,"customer_email":"a@b.co","currency":"JPY"}`, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := order.ParseRequest([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.AmountMinor != tt.total {
				t.Fatalf("amount = %d, want %d", r.AmountMinor, tt.total)
			}
		})
	}
}

func BenchmarkParseRequest(b *testing.B) {
	body := []byte(`{"product_name":"Book","quantity":2,"price_per_item":"10.50","customer_email":"ada@example.com"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := order.ParseRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}
