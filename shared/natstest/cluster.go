package natstest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/testkit"
)

// Cluster is a JetStream cluster of embedded servers on 127.0.0.1, for
// tests of replicated streams and of losing a node.
type Cluster struct {
	Servers []*Server
}

// RunCluster starts n servers that route to each other, each with its own
// store, waits until JetStream can place a replicated stream, and stops
// them when the test ends.
func RunCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	clientPorts, routePorts := freePorts(tb, n), freePorts(tb, n)
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	c := &Cluster{}
	for i := range n {
		opts := Options(tb.TempDir(), clientPorts[i])
		opts.ServerName = fmt.Sprintf("jethook-test-%d", i+1)
		opts.Cluster = server.ClusterOpts{Name: "jethook-test", Host: "127.0.0.1", Port: routePorts[i]}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		srv, err := server.NewServer(&opts)
		if err != nil {
			tb.Fatal(err)
		}
		srv.Start()
		s := &Server{srv: srv, opts: opts}
		c.Servers = append(c.Servers, s)
		tb.Cleanup(s.Shutdown)
	}
	for _, s := range c.Servers {
		if !s.srv.ReadyForConnections(10 * time.Second) {
			tb.Fatalf("%s not ready", s.opts.ServerName)
		}
	}
	c.waitForJetStream(tb, n)
	return c
}

// URLs is the comma-separated client URL list of every node, as NATS_URL
// takes it.
func (c *Cluster) URLs() string {
	var urls []string
	for _, s := range c.Servers {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}

// waitForJetStream waits until a stream with n replicas can be created,
// which needs a meta leader and every peer known.
func (c *Cluster) waitForJetStream(tb testing.TB, n int) {
	tb.Helper()
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NATSTEST_PROBE", Subjects: []string{"natstest.probe"}, Replicas: n, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "NATSTEST_PROBE")
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("JetStream cluster not ready within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	// Ports below the ephemeral range: a node restarts on its ports, which
	// an outgoing connection must not have taken meanwhile.
	var ports []int
	for range n {
		port, err := testkit.FreePort()
		if err != nil {
			tb.Fatal(err)
		}
		ports = append(ports, port)
	}
	return ports
}
