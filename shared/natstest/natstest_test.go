package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRestartKeepsStream proves what the harness is for: a message
// acknowledged before a restart is still there after it, on the same URL.
func TestRestartKeepsStream(t *testing.T) {
	s := RunServer(t)
	url := s.URL()
	_, js := Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if s.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, s.URL())
	}
	_, js2 := Connect(t, url)
	st, err := js2.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil || string(msg.Data) != "kept" {
		t.Fatalf("after restart GetMsg = %v, %v", msg, err)
	}
}

// TestClusterKeepsReplicatedStreamWritable: with one of three nodes down, a
// stream of three replicas still takes messages, and the node catches up
// when it returns.
func TestClusterKeepsReplicatedStreamWritable(t *testing.T) {
	c := RunCluster(t, 3)
	_, js := Connect(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r3.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
	c.Servers[1].Shutdown()
	// A publish in flight while the client reconnects, or while the stream
	// elects a new leader, gets no answer: each try has its own short
	// deadline, as a careful client's would.
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		tryCtx, cancelTry := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.Publish(tryCtx, "r3.b", []byte("during"), jetstream.WithMsgID("during-1"))
		cancelTry()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("publish with one node down: %v", err)
	}
	c.Servers[1].Restart(t)
	st, err := js.Stream(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 2 || info.Config.Replicas != 3 {
		t.Fatalf("R3 after the node returned: %+v, %v", info, err)
	}
}
