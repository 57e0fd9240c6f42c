package natsx_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
)

// TestProvisionIsIdempotent runs provisioning twice, as two services starting
// together would, and checks the settings the design fixes.
func TestProvisionIsIdempotent(t *testing.T) {
	s := natstest.RunServer(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, _, err := natsx.Connect(config.NATS{NATSURL: s.URL()}, "test", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := natsx.Requirement{
		Streams: []string{natsx.StreamOrders, natsx.StreamNotifications, natsx.StreamDeadletter},
		Buckets: []string{natsx.BucketOrders, natsx.BucketProcessed, natsx.BucketSubscriptions},
	}
	if err := natsx.Check(ctx, nc, js, req); err == nil {
		t.Fatal("Check passed before provisioning")
	}
	streams := []jetstream.StreamConfig{natsx.OrdersStream(1), natsx.NotificationsStream(1), natsx.DeadletterStream(1)}
	buckets := []jetstream.KeyValueConfig{natsx.OrdersBucket(1), natsx.ProcessedBucket(1, 72*time.Hour), natsx.SubscriptionsBucket(1)}
	for i := 0; i < 2; i++ {
		if err := natsx.Provision(ctx, js, streams, buckets); err != nil {
			t.Fatalf("Provision #%d: %v", i+1, err)
		}
	}
	if err := natsx.Check(ctx, nc, js, req); err != nil {
		t.Fatalf("Check after provisioning: %v", err)
	}
	st, err := js.Stream(ctx, natsx.StreamOrders)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != 2*time.Minute || cfg.MaxAge != 7*24*time.Hour || cfg.Subjects[0] != "orders.>" {
		t.Fatalf("ORDERS config = %+v", cfg)
	}
	nst, _ := js.Stream(ctx, natsx.StreamNotifications)
	if nst.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
		t.Fatal("NOTIFICATIONS is not a work queue")
	}
	subs, err := js.KeyValue(ctx, natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	// No history: an old revision would keep a rotated secret on disk.
	if st, err := subs.Status(ctx); err != nil || st.History() != 1 || st.BackingStore() != "JetStream" || st.Config().Storage != jetstream.FileStorage {
		t.Fatalf("subscriptions bucket status %+v, %v; want file storage with history 1", st, err)
	}
	kv, err := js.KeyValue(ctx, natsx.BucketProcessed)
	if err != nil {
		t.Fatal(err)
	}
	// A per-key TTL must be accepted: the notifier's claims rely on it.
	if _, err := kv.Create(ctx, "evt_x", []byte("claimed"), jetstream.KeyTTL(2*time.Second)); err != nil {
		t.Fatalf("Create with KeyTTL: %v", err)
	}
}
