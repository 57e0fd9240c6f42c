package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

// secureNATS is NATS as production runs it: TLS only, from a CA made for
// the test, client certificates verified, and a user with a password.
type secureNATS struct {
	ca        *testkit.CA
	cert, key string
	password  string
}

func newSecureNATS(t *testing.T) *secureNATS {
	t.Helper()
	ca := testkit.NewCA(t)
	cert, key := ca.Issue(t, "jethook")
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return &secureNATS{ca: ca, cert: cert, key: key, password: "pw-" + hex.EncodeToString(b)}
}

func (n *secureNATS) serverOptions() []natstest.Option {
	return []natstest.Option{natstest.WithMutualTLS(n.ca), natstest.WithUser("jethook", n.password)}
}

// tlsEnv is the TLS part of the services' settings: enough to be let in
// by TLS, not by the server's authorization.
func (n *secureNATS) tlsEnv() map[string]string {
	return map[string]string{"NATS_TLS_CA": n.ca.CertFile, "NATS_TLS_CERT": n.cert, "NATS_TLS_KEY": n.key}
}

// env is every setting a service needs for this server; none for a nil n,
// the plain server of most tests.
func (n *secureNATS) env() map[string]string {
	if n == nil {
		return nil
	}
	env := n.tlsEnv()
	env["NATS_USER"], env["NATS_PASSWORD"] = "jethook", n.password
	return env
}

// clientOptions are the same settings for the test's own connection; none
// for a nil n.
func (n *secureNATS) clientOptions() []nats.Option {
	if n == nil {
		return nil
	}
	return []nats.Option{nats.RootCAs(n.ca.CertFile), nats.ClientCert(n.cert, n.key), nats.UserInfo("jethook", n.password)}
}

// TestSecureNATSOrderBecomesOneEmail: with NATS behind mutual TLS and a
// password, every service connects with its NATS_* settings and an order
// still becomes exactly one email; startSystem's cleanup checks that the
// NATS password appears in no process's output.
func TestSecureNATSOrderBecomesOneEmail(t *testing.T) {
	s := startSystem(t, options{secureNATS: true})
	o := s.createOrder("", "ada@example.com")
	s.waitEmail(o.OrderID, 30*time.Second)
	s.settle(30 * time.Second)
	if n := len(s.emailsFor(o.OrderID)); n != 1 {
		t.Fatalf("%d emails for one order", n)
	}
}

// serviceEnv is what each binary needs besides NATS to start at all.
func serviceEnv(t *testing.T, name string) map[string]string {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	switch name {
	case "orders":
		return map[string]string{"ORDERS_ADDR": freeAddr(t)}
	case "dispatcher":
		env := map[string]string{"DISPATCHER_ADDR": freeAddr(t), "WEBHOOK_SECRET": secret}
		for k, v := range adminEnv {
			env[k] = v
		}
		return env
	default:
		return map[string]string{"NOTIFIER_ADDR": freeAddr(t), "WEBHOOK_SECRET": secret}
	}
}

// runToExit runs a binary that is expected to stop by itself, and returns
// its standard error and whole output once it exited with status 1.
func runToExit(t *testing.T, name string, env map[string]string) (stderr, out string) {
	t.Helper()
	p := newProc(t, name, env)
	p.start()
	select {
	case err := <-p.done:
		p.cmd = nil
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("%s exited with %v, want status 1\n%s", name, err, p.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after 30 s\n%s", name, p.out)
	}
	return p.errOut.String(), p.out.String()
}

// TestServiceRefusedByNATSStops: a service whose credentials the server
// refuses (none, or a wrong password) does not wait forever: it exits 1
// with one line on stderr that names what to check, and the wrong
// password appears in none of its output.
func TestServiceRefusedByNATSStops(t *testing.T) {
	secure := newSecureNATS(t)
	ns := natstest.RunServer(t, secure.serverOptions()...)
	const wrong = "wr0ng-pw-1f2e3d"
	tests := []struct {
		name     string
		extra    map[string]string
		wantHint string
	}{
		{"no credentials", nil, "no credentials are set: set NATS_CREDS, NATS_NKEY or NATS_USER/NATS_PASSWORD"},
		{"wrong password", map[string]string{"NATS_USER": "jethook", "NATS_PASSWORD": wrong}, "check NATS_USER/NATS_PASSWORD"},
	}
	for _, tt := range tests {
		for _, name := range []string{"orders", "dispatcher", "notifier"} {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				env := serviceEnv(t, name)
				env["NATS_URL"] = ns.URL()
				for _, m := range []map[string]string{secure.tlsEnv(), tt.extra} {
					for k, v := range m {
						env[k] = v
					}
				}
				stderr, out := runToExit(t, name, env)
				line := strings.TrimSuffix(stderr, "\n")
				if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(line, name+": NATS at "+ns.URL()+" refused the connection") ||
					!strings.Contains(strings.ToLower(line), "authorization violation") || !strings.HasSuffix(line, tt.wantHint) {
					t.Fatalf("stderr = %q, want one line with the refusal and %q", stderr, tt.wantHint)
				}
				if strings.Contains(out, wrong) {
					t.Fatalf("the password is in the output:\n%s", out)
				}
			})
		}
	}
}

// TestBadNATSURLHidesThePassword: a NATS_URL that does not parse stops
// each service with one line naming the variable, its password masked
// (before, the line printed the password).
func TestBadNATSURLHidesThePassword(t *testing.T) {
	for _, name := range []string{"orders", "dispatcher", "notifier"} {
		t.Run(name, func(t *testing.T) {
			env := serviceEnv(t, name)
			env["NATS_URL"] = "nats://user:s3cret-pw@127.0.0.1:notaport"
			stderr, out := runToExit(t, name, env)
			want := name + `: invalid NATS_URL="nats://user:xxxxx@127.0.0.1:notaport"`
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, want) {
				t.Fatalf("stderr = %q, want one line starting %q", stderr, want)
			}
			if strings.Contains(out, "s3cret-pw") {
				t.Fatalf("the password is in the output:\n%s", out)
			}
		})
	}
}

// TestDeployProductionExamples: the commented production examples of
// deploy/nats, uncommented and pointed at certificates made for the test,
// are valid nats-server configurations; and the single node's admits a
// service set up as the README says, over which JetStream works.
func TestDeployProductionExamples(t *testing.T) {
	ca := testkit.NewCA(t)
	tlsDir := t.TempDir()
	copyFile(t, ca.CertFile, filepath.Join(tlsDir, "ca.pem"))
	for _, name := range []string{"server", "route"} {
		cert, key := ca.Issue(t, name)
		copyFile(t, cert, filepath.Join(tlsDir, name+".pem"))
		copyFile(t, key, filepath.Join(tlsDir, name+"-key.pem"))
	}
	for _, user := range []string{"ORDERS", "DISPATCHER", "NOTIFIER"} {
		t.Setenv("NATS_"+user+"_PASSWORD", "pw-"+strings.ToLower(user))
	}
	confDir := t.TempDir()
	uncomment := func(name string, wantBlocks int) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(rootDir, "deploy", "nats", name))
		if err != nil {
			t.Fatal(err)
		}
		conf, blocks := uncommentExamples(string(b))
		if blocks != wantBlocks {
			t.Fatalf("%s has %d production example blocks, want %d", name, blocks, wantBlocks)
		}
		path := filepath.Join(confDir, filepath.Base(name))
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(conf, "/etc/nats/tls/", tlsDir+"/")), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	t.Run("cluster", func(t *testing.T) {
		uncomment("cluster/jetstream.conf", 2)
		opts, err := server.ProcessConfigFile(uncomment("cluster/nats-1.conf", 0))
		if err != nil {
			t.Fatal(err)
		}
		if !mutualTLS(opts.TLSConfig) || len(opts.Users) != 3 || !mutualTLS(opts.Cluster.TLSConfig) {
			t.Fatalf("cluster example: client mTLS %v, %d users, route mTLS %v", mutualTLS(opts.TLSConfig), len(opts.Users), mutualTLS(opts.Cluster.TLSConfig))
		}
	})

	t.Run("single node", func(t *testing.T) {
		opts, err := server.ProcessConfigFile(uncomment("single.conf", 1))
		if err != nil {
			t.Fatal(err)
		}
		if !mutualTLS(opts.TLSConfig) || len(opts.Users) != 3 {
			t.Fatalf("single example: client mTLS %v, %d users", mutualTLS(opts.TLSConfig), len(opts.Users))
		}
		// The example as it is, on a free port of 127.0.0.1, without
		// monitoring, storing in the test's directory.
		opts.Host, opts.Port, opts.HTTPHost, opts.HTTPPort = "127.0.0.1", -1, "", 0
		opts.StoreDir, opts.NoLog, opts.NoSigs = t.TempDir(), true, true
		ns, err := natstest.Start(*opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Shutdown)

		cert, key := ca.Issue(t, "orders")
		env := map[string]string{
			"NATS_URL": ns.URL(), "NATS_TLS_CA": filepath.Join(tlsDir, "ca.pem"), "NATS_TLS_CERT": cert, "NATS_TLS_KEY": key,
			"NATS_USER": "orders", "NATS_PASSWORD": "pw-orders",
		}
		e := config.New(func(k string) string { return env[k] })
		cfg := e.LoadNATS()
		if err := e.Err(); err != nil {
			t.Fatal(err)
		}
		nc, lost, err := natsx.Connect(cfg, "orders", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		eventually(t, 20*time.Second, "a connection to the example server", nc.IsConnected)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := js.CreateOrUpdateStream(ctx, natsx.OrdersStream(1)); err != nil {
			t.Fatalf("JetStream on the example server: %v", err)
		}
		select {
		case err := <-lost:
			t.Fatal(err)
		default:
		}
	})
}

// mutualTLS says whether cfg makes the server verify client certificates.
func mutualTLS(cfg *tls.Config) bool {
	return cfg != nil && cfg.ClientAuth == tls.RequireAndVerifyClientCert
}

// uncommentExamples removes the first "# " of every line between the
// production example markers, and the markers, and counts the blocks.
func uncommentExamples(conf string) (string, int) {
	var out []string
	blocks, in := 0, false
	for _, line := range strings.Split(conf, "\n") {
		body := strings.TrimLeft(line, " ")
		indent := line[:len(line)-len(body)]
		switch {
		case body == "# >>> production example":
			blocks, in = blocks+1, true
			continue
		case body == "# <<< production example":
			in = false
			continue
		case in:
			line = indent + strings.TrimPrefix(strings.TrimPrefix(body, "#"), " ")
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n"), blocks
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
