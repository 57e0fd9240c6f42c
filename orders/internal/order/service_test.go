package order_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/orders/internal/order"
	"github.com/jethook/jethook/orders/internal/store"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
)

var errCrash = errors.New("simulated crash")

// crashAfterPublish publishes for real, then fails as a process killed
// right after the PubAck (before the order record is written) would.
type crashAfterPublish struct{ order.EventPublisher }

func (p crashAfterPublish) PublishOrderPaid(ctx context.Context, e event.OrderPaid) error {
	if err := p.EventPublisher.PublishOrderPaid(ctx, e); err != nil {
		return err
	}
	return errCrash
}

// crashOnFirstPut fails the first write of an order, as a crash right after
// the idempotency key was bound would.
type crashOnFirstPut struct {
	order.Store
	failed bool
}

func (s *crashOnFirstPut) Put(ctx context.Context, o order.Order) error {
	if !s.failed {
		s.failed = true
		return errCrash
	}
	return s.Store.Put(ctx, o)
}

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
	return store.New(nc, js, orders, keys), st, js
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

func TestResumeAfterCrash(t *testing.T) {
	tests := []struct {
		name       string
		duplicates time.Duration
		// waitPastWindow lets the JetStream duplicate window lapse before the
		// retry, so only the per-subject expectation can stop a second event.
		waitPastWindow bool
		crashStore     bool
	}{
		{"crash after PubAck, retry inside the duplicate window", 2 * time.Minute, false, false},
		{"crash after PubAck, retry after the duplicate window", 200 * time.Millisecond, true, false},
		{"crash before the order was stored", 2 * time.Minute, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, st, client := setup(t, tt.duplicates)
			ctx := context.Background()
			first := &order.Service{Store: js, Publisher: crashAfterPublish{js}, Payer: order.SimulatedPayer{}, Logger: logger()}
			wantEvents := uint64(1)
			if tt.crashStore {
				first = &order.Service{Store: &crashOnFirstPut{Store: js}, Publisher: js, Payer: order.SimulatedPayer{}, Logger: logger()}
				wantEvents = 0
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
			retry := &order.Service{Store: js, Publisher: js, Payer: order.SimulatedPayer{}, Logger: logger()}
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
	first := &order.Service{Store: js, Publisher: failingPublisher{}, Payer: order.SimulatedPayer{}, Logger: logger(), Now: func() time.Time { return clock }}
	if _, _, err := first.Create(ctx, request(t), "key-late"); err == nil {
		t.Fatal("first attempt with a failing publisher succeeded")
	}

	clock = created.Add(96 * time.Hour)
	retry := &order.Service{Store: js, Publisher: js, Payer: order.SimulatedPayer{}, Logger: logger(), Now: func() time.Time { return clock }}
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

// TestGetRepairsAPublishedPendingOrder: the process died after the PubAck
// and before the record said paid. GET shows the truth (paid, since the
// email is on its way) and writes it back; an order whose event never made
// it stays pending.
func TestGetRepairsAPublishedPendingOrder(t *testing.T) {
	js, _, _ := setup(t, 2*time.Minute)
	ctx := context.Background()
	published := &recordingStore{Store: js}
	crashing := &order.Service{Store: published, Publisher: crashAfterPublish{js}, Payer: order.SimulatedPayer{}, Logger: logger()}
	if _, _, err := crashing.Create(ctx, request(t), "key-b"); !errors.Is(err, errCrash) {
		t.Fatalf("Create = %v, want the simulated crash", err)
	}
	unpublished := &recordingStore{Store: js}
	failing := &order.Service{Store: unpublished, Publisher: failingPublisher{}, Payer: order.SimulatedPayer{}, Logger: logger()}
	if _, _, err := failing.Create(ctx, request(t), "key-c"); err == nil {
		t.Fatal("Create with a failing publisher succeeded")
	}
	svc := &order.Service{Store: js, Publisher: js, Events: js, Payer: order.SimulatedPayer{}, Logger: logger()}
	for _, tt := range []struct {
		name  string
		store *recordingStore
		want  string
	}{
		{"event published before the crash", published, order.StatusPaid},
		{"event never published", unpublished, order.StatusPending},
	} {
		if len(tt.store.ids) == 0 {
			t.Fatalf("%s: no order was stored", tt.name)
		}
		id := tt.store.ids[0]
		got, err := svc.Get(ctx, id)
		if err != nil || got.Status != tt.want {
			t.Fatalf("%s: Get = %+v, %v; want status %s", tt.name, got, err, tt.want)
		}
		stored, err := js.Get(ctx, id)
		if err != nil || stored.Status != tt.want {
			t.Fatalf("%s: stored status %q (%v), want %s", tt.name, stored.Status, err, tt.want)
		}
	}
}

// TestPaidOrderIsAnsweredEvenIfItsRecordIsNot: once the PubAck is in, the
// order is paid and its email will be sent, so Create reports it paid even
// when the last write fails, and GET repairs the record.
func TestPaidOrderIsAnsweredEvenIfItsRecordIsNot(t *testing.T) {
	js, st, _ := setup(t, 2*time.Minute)
	ctx := context.Background()
	svc := &order.Service{Store: failPaidPut{js}, Publisher: js, Events: js, Payer: order.SimulatedPayer{}, Logger: logger()}
	o, _, err := svc.Create(ctx, request(t), "")
	if err != nil || o.Status != order.StatusPaid {
		t.Fatalf("Create = %+v, %v; want the paid order", o, err)
	}
	if n := msgs(t, st); n != 1 {
		t.Fatalf("ORDERS holds %d events, want 1", n)
	}
	if stored, _ := js.Get(ctx, o.OrderID); stored.Status != order.StatusPending {
		t.Fatalf("record says %q; the test needs the paid write to have failed", stored.Status)
	}
	reader := &order.Service{Store: js, Publisher: js, Events: js, Payer: order.SimulatedPayer{}, Logger: logger()}
	if got, err := reader.Get(ctx, o.OrderID); err != nil || got.Status != order.StatusPaid {
		t.Fatalf("Get = %+v, %v; want paid", got, err)
	}
}

// failPaidPut fails every write of a paid order, as NATS going away right
// after the PubAck would.
type failPaidPut struct{ order.Store }

func (s failPaidPut) Put(ctx context.Context, o order.Order) error {
	if o.Status == order.StatusPaid {
		return order.ErrUnavailable
	}
	return s.Store.Put(ctx, o)
}

// recordingStore remembers the ids of the orders written through it.
type recordingStore struct {
	order.Store
	ids []string
}

func (s *recordingStore) Put(ctx context.Context, o order.Order) error {
	s.ids = append(s.ids, o.OrderID)
	return s.Store.Put(ctx, o)
}

// failingPublisher never gets its event into the stream.
type failingPublisher struct{}

func (failingPublisher) PublishOrderPaid(context.Context, event.OrderPaid) error {
	return order.ErrUnavailable
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
