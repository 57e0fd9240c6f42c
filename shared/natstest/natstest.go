package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/testkit"
)

// Server is an embedded JetStream server with file storage.
type Server struct {
	srv  *server.Server
	opts server.Options
}

// Options returns the options RunServer uses: JetStream with file storage in
// storeDir, client port port on 127.0.0.1 (-1 for a random one), no
// monitoring, no logging, no signal handling.
func Options(storeDir string, port int) server.Options {
	return server.Options{
		ServerName: "jethook-test",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoLog:      true,
		NoSigs:     true,
		// JetStream reserves memory and disk from these; small values keep
		// many parallel test servers cheap.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
	}
}

// Start starts a server with opts and waits until it accepts clients.
func Start(opts server.Options) (*Server, error) {
	srv, err := server.NewServer(&opts)
	if err != nil {
		return nil, fmt.Errorf("new nats-server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats-server not ready within 10s")
	}
	// Keep the actual port so that Restart comes back where clients look.
	opts.Port = srv.Addr().(*net.TCPAddr).Port
	return &Server{srv: srv, opts: opts}, nil
}

// RunServer starts a server on a random port with a fresh store directory,
// configured further by options (TLS, users), and stops it when the test
// ends.
func RunServer(tb testing.TB, options ...Option) *Server {
	tb.Helper()
	// A port below the ephemeral range, so that a Restart finds it free.
	port, err := testkit.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	opts := Options(tb.TempDir(), port)
	Apply(tb, &opts, options...)
	s, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

// URL is the client URL of the server: tls:// when it speaks only TLS.
func (s *Server) URL() string {
	scheme := "nats"
	if s.opts.TLSConfig != nil {
		scheme = "tls"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.opts.Port)
}

// StoreDir is where JetStream keeps its files.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Shutdown stops the server and waits until it is gone. It is safe to call
// more than once.
func (s *Server) Shutdown() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// Restart stops the server and starts it again on the same port and store,
// as an operator's restart would.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Shutdown()
	srv, err := server.NewServer(&s.opts)
	if err != nil {
		tb.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready after restart")
	}
	s.srv = srv
}

// Reload gives a running single server new options (who may connect, for
// instance) in place of those it started with, as an operator's config
// reload would: clients that are no longer authorized are disconnected.
func (s *Server) Reload(tb testing.TB, options ...Option) {
	tb.Helper()
	opts := Options(s.opts.StoreDir, s.opts.Port)
	opts.ServerName = s.opts.ServerName
	Apply(tb, &opts, options...)
	if err := s.srv.ReloadOptions(&opts); err != nil {
		tb.Fatal(err)
	}
	s.opts = opts
}

// Connect opens a client connection and a JetStream context, closed when the
// test ends; options add credentials or TLS settings.
func Connect(tb testing.TB, url string, options ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, options...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// Name is the server's name, as JetStream reports stream leaders.
func (s *Server) Name() string { return s.opts.ServerName }
