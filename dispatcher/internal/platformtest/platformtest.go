// Package platformtest runs the webhook platform's NATS objects on a real
// in-process nats-server for the dispatcher's tests, and makes real dead
// letters through the consumer runtime.
package platformtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/dispatcher/internal/platform"
	"github.com/jethook/jethook/shared/consume"
	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
	"github.com/jethook/jethook/shared/tracing"
)

// Env is a nats-server with ORDERS, DEADLETTER and the platform's objects.
type Env struct {
	Server *natstest.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// Ctx is a context that ends with the test, or after a minute.
func Ctx(tb testing.TB) context.Context {
	tb.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return c
}

// Start runs a server and provisions everything the dispatcher would.
func Start(tb testing.TB) *Env {
	tb.Helper()
	srv := natstest.RunServer(tb)
	nc, js := natstest.Connect(tb, srv.URL())
	e := &Env{Server: srv, NC: nc, JS: js}
	e.Provision(tb)
	return e
}

// Provision creates ORDERS, DEADLETTER and the platform's objects.
func (e *Env) Provision(tb testing.TB) {
	tb.Helper()
	streams := []jetstream.StreamConfig{natsx.OrdersStream(1), natsx.DeadletterStream(1)}
	if err := natsx.Provision(Ctx(tb), e.JS, streams, nil); err != nil {
		tb.Fatal(err)
	}
	if err := platform.Provision(Ctx(tb), e.JS, 1, natsx.DefaultAttemptLogMaxAge); err != nil {
		tb.Fatal(err)
	}
}

// Publish puts events into ORDERS as the orders service does, and
// returns their stream sequences.
func (e *Env) Publish(tb testing.TB, events ...event.OrderPaid) []uint64 {
	tb.Helper()
	seqs := make([]uint64, len(events))
	for i, ev := range events {
		body, err := ev.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		ack, err := e.JS.PublishMsg(Ctx(tb), &nats.Msg{
			Subject: event.Subject(ev.Data.OrderID), Data: body,
			Header: nats.Header{jetstream.MsgIDHeader: {ev.ID}, tracing.HeaderTraceparent: {Traceparent(ev)}},
		})
		if err != nil {
			tb.Fatal(err)
		}
		seqs[i] = ack.Sequence
	}
	return seqs
}

// Traceparent is the trace context Publish gives ev: one trace per event,
// as the orders service starts it.
func Traceparent(ev event.OrderPaid) string {
	sum := sha256.Sum256([]byte(ev.ID))
	return "00-" + hex.EncodeToString(sum[:16]) + "-" + hex.EncodeToString(sum[16:24]) + "-01"
}

// Events returns n fresh order.paid events.
func Events(tb testing.TB, n int) []event.OrderPaid {
	tb.Helper()
	out := make([]event.OrderPaid, n)
	for i := range out {
		out[i] = testkit.OrderPaid(tb)
	}
	return out
}

var runners atomic.Int64

// DeadLetter publishes events to ORDERS and has the consumer runtime give
// each up for subscription subID, as a subscription's consumer does after
// its last attempt (503 was the last status), and waits until every one
// is in DEADLETTER. One worker gives them up in turn, so that their
// Jethook-Dead-Lettered-At stamps follow their order in DEADLETTER. It
// returns the ORDERS sequences.
func (e *Env) DeadLetter(tb testing.TB, subID string, events ...event.OrderPaid) []uint64 {
	tb.Helper()
	before := e.count(tb, natsx.StreamDeadletter, natsx.DeadletterFilter(subID))
	seqs := e.Publish(tb, events...)
	var filters []string
	for _, ev := range events {
		filters = append(filters, event.Subject(ev.Data.OrderID))
	}
	name := "deadletter-" + strconv.FormatInt(runners.Add(1), 10)
	timings := consume.Timings{AckWait: 2 * time.Second, Heartbeat: 500 * time.Millisecond, MessageTimeout: time.Second,
		SettleTimeout: time.Second, ShutdownGrace: time.Second}
	r, err := consume.New(consume.Config{
		Stream: natsx.StreamOrders, Name: name, Owner: subID, Concurrency: 1, Timings: timings,
		Handle: func(_ context.Context, m *consume.Msg) consume.Decision {
			ev, err := event.Decode(m.Data())
			id := ev.ID
			if err != nil {
				id = ""
			}
			return consume.DeadLetter("dead_lettered", "max_deliveries", fmt.Errorf("receiver answered 503 Service Unavailable")).
				WithHeader(consume.HeaderAttempts, "15").
				WithHeader(consume.HeaderLastStatus, "503").
				WithHeader(consume.HeaderEventID, id)
		},
		Provision: func(ctx context.Context, resume uint64) (jetstream.Consumer, error) {
			return consume.EnsureConsumer(ctx, e.JS, natsx.StreamOrders, jetstream.ConsumerConfig{
				Durable: name, FilterSubjects: filters, AckPolicy: jetstream.AckExplicitPolicy, AckWait: timings.AckWait,
			}, resume)
		},
		JS: e.JS, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	testkit.Eventually(tb, 30*time.Second, "the dead letters", func() bool {
		return e.count(tb, natsx.StreamDeadletter, natsx.DeadletterFilter(subID)) == before+uint64(len(events))
	})
	cancel()
	<-done
	return seqs
}

// Count is how many messages of stream match filter.
func (e *Env) Count(tb testing.TB, stream, filter string) uint64 {
	tb.Helper()
	return e.count(tb, stream, filter)
}

func (e *Env) count(tb testing.TB, stream, filter string) uint64 {
	tb.Helper()
	s, err := e.JS.Stream(Ctx(tb), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(Ctx(tb), jetstream.WithSubjectFilter(filter))
	if err != nil {
		tb.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// Redeliveries returns what waits in REDELIVERIES, oldest first.
func (e *Env) Redeliveries(tb testing.TB) []*jetstream.RawStreamMsg {
	tb.Helper()
	s, err := e.JS.Stream(Ctx(tb), natsx.StreamRedeliveries)
	if err != nil {
		tb.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; seq = out[len(out)-1].Sequence + 1 {
		m, err := s.GetMsg(Ctx(tb), seq, jetstream.WithGetMsgSubject("redeliver.>"))
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}
