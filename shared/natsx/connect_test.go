package natsx_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jethook/jethook/shared/config"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

const password = "s3cret-Passw0rd"

// connect calls natsx.Connect with a logger into a buffer, and closes the
// connection when the test ends.
func connect(t *testing.T, cfg config.NATS) (*nats.Conn, <-chan error, *testkit.SyncBuffer) {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	nc, lost, err := natsx.Connect(cfg, "test", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, lost, logs
}

// TestConnectSecured: each way a production server is set up (TLS, mTLS,
// users with passwords, NKeys, a .creds file in operator mode) admits a
// client with the matching settings, and JetStream works over it.
func TestConnectSecured(t *testing.T) {
	ca := testkit.NewCA(t)
	clientCert, clientKey := ca.Issue(t, "client")
	nkeyPub, nkeySeed := natstest.NewNKeyUser(t)
	op := natstest.NewOperator(t)
	tests := []struct {
		name    string
		options []natstest.Option
		cfg     func(url string) config.NATS
	}{
		{"TLS", []natstest.Option{natstest.WithTLS(ca)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSTLSCA: ca.CertFile}
		}},
		{"mutual TLS", []natstest.Option{natstest.WithMutualTLS(ca)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSTLSCA: ca.CertFile, NATSTLSCert: clientCert, NATSTLSKey: clientKey}
		}},
		{"NATS_USER and NATS_PASSWORD", []natstest.Option{natstest.WithUser("orders", password)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSUser: "orders", NATSPassword: password}
		}},
		{"user and password in the URL", []natstest.Option{natstest.WithUser("orders", password)}, func(url string) config.NATS {
			return config.NATS{NATSURL: strings.Replace(url, "://", "://orders:"+password+"@", 1)}
		}},
		{"NKey", []natstest.Option{natstest.WithNKey(nkeyPub)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSNKey: nkeySeed}
		}},
		{"creds file", []natstest.Option{natstest.WithOperator(op)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSCreds: op.UserCreds(t)}
		}},
		{"creds file over mutual TLS", []natstest.Option{natstest.WithOperator(op), natstest.WithMutualTLS(ca)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSCreds: op.UserCreds(t), NATSTLSCA: ca.CertFile, NATSTLSCert: clientCert, NATSTLSKey: clientKey}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := natstest.RunServer(t, tt.options...)
			nc, lost, logs := connect(t, tt.cfg(s.URL()))
			testkit.Eventually(t, 20*time.Second, "the connection", nc.IsConnected)
			assertJetStream(t, nc)
			assertNotLost(t, lost)
			if strings.Contains(logs.String(), password) {
				t.Fatalf("the password is in the log:\n%s", logs)
			}
		})
	}
}

// assertNotLost fails the test if the connection was given up.
func assertNotLost(t *testing.T, lost <-chan error) {
	t.Helper()
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	default:
	}
}

// assertJetStream proves the connection is usable: a stream takes a
// message and gives it back.
func assertJetStream(t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("hello")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil || string(msg.Data) != "hello" {
		t.Fatalf("GetMsg = %v, %v", msg, err)
	}
}

// TestConnectRefused: a server that refuses the credentials ends the
// connection, instead of a silent retry forever, and lost says so in one
// line naming what to check, without the password.
func TestConnectRefused(t *testing.T) {
	nkeyPub, _ := natstest.NewNKeyUser(t)
	_, otherSeed := natstest.NewNKeyUser(t)
	op, otherOp := natstest.NewOperator(t), natstest.NewOperator(t)
	const wrong = "wr0ng-Passw0rd"
	tests := []struct {
		name     string
		options  []natstest.Option
		cfg      func(url string) config.NATS
		wantHint string
	}{
		{"no credentials", []natstest.Option{natstest.WithUser("orders", password)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url}
		}, "no credentials are set: set NATS_CREDS, NATS_NKEY or NATS_USER/NATS_PASSWORD"},
		{"wrong NATS_PASSWORD", []natstest.Option{natstest.WithUser("orders", password)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSUser: "orders", NATSPassword: wrong}
		}, "check NATS_USER/NATS_PASSWORD"},
		{"wrong password in the URL", []natstest.Option{natstest.WithUser("orders", password)}, func(url string) config.NATS {
			return config.NATS{NATSURL: strings.Replace(url, "://", "://orders:"+wrong+"@", 1)}
		}, "check the user and password in NATS_URL"},
		{"token the server does not know", []natstest.Option{natstest.WithUser("orders", password)}, func(url string) config.NATS {
			return config.NATS{NATSURL: strings.Replace(url, "://", "://"+wrong+"@", 1)}
		}, "check the token in NATS_URL"},
		{"unknown NKey", []natstest.Option{natstest.WithNKey(nkeyPub)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSNKey: otherSeed}
		}, "check NATS_NKEY"},
		{"creds of another operator", []natstest.Option{natstest.WithOperator(op)}, func(url string) config.NATS {
			return config.NATS{NATSURL: url, NATSCreds: otherOp.UserCreds(t)}
		}, "check NATS_CREDS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := natstest.RunServer(t, tt.options...)
			nc, lost, logs := connect(t, tt.cfg(s.URL()))
			var err error
			select {
			case err = <-lost:
			case <-time.After(20 * time.Second):
				t.Fatal("the connection was not given up within 20 s")
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(strings.ToLower(msg), "authorization violation") || !strings.HasSuffix(msg, tt.wantHint) || strings.Contains(msg, "\n") {
				t.Fatalf("lost = %q, want one line with the server's refusal and %q", msg, tt.wantHint)
			}
			if strings.Contains(msg, wrong) || strings.Contains(logs.String(), wrong) {
				t.Fatalf("the password is in the error or the log:\n%s\n%s", msg, logs)
			}
			if !nc.IsClosed() {
				t.Fatal("connection still retrying")
			}
		})
	}
}

// TestConnectWaitsForAServerNotUpYet: a service started before NATS
// connects when NATS comes, credentials and all; a refusal is the only
// thing that ends the retrying.
func TestConnectWaitsForAServerNotUpYet(t *testing.T) {
	addr := testkit.FreeAddr(t)
	_, portText, _ := net.SplitHostPort(addr)
	var port int
	fmt.Sscan(portText, &port)
	nc, lost, logs := connect(t, config.NATS{NATSURL: "nats://" + addr, NATSUser: "orders", NATSPassword: password})
	testkit.Eventually(t, 10*time.Second, "a log line saying why NATS is not reachable", func() bool {
		return strings.Contains(logs.String(), "cannot connect to NATS yet")
	})

	opts := natstest.Options(t.TempDir(), port)
	natstest.Apply(t, &opts, natstest.WithUser("orders", password))
	s, err := natstest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	testkit.Eventually(t, 20*time.Second, "the connection", nc.IsConnected)
	assertJetStream(t, nc)
	assertNotLost(t, lost)
}

// TestConnectReportsATLSFailure: a client that does not trust the server's
// certificate keeps retrying (the certificate may be fixed on the server
// side) but says why, in the log and in the readiness check.
func TestConnectReportsATLSFailure(t *testing.T) {
	s := natstest.RunServer(t, natstest.WithTLS(testkit.NewCA(t)))
	nc, lost, logs := connect(t, config.NATS{NATSURL: s.URL(), NATSTLSCA: testkit.NewCA(t).CertFile})
	testkit.Eventually(t, 20*time.Second, "a log line naming the certificate failure", func() bool {
		return strings.Contains(logs.String(), "cannot connect to NATS yet") && strings.Contains(logs.String(), "certificate")
	})
	testkit.Eventually(t, 20*time.Second, "the readiness check to name the certificate failure", func() bool {
		err := natsx.Check(context.Background(), nc, nil, natsx.Requirement{})
		return err != nil && strings.Contains(err.Error(), "certificate")
	})
	if nc.IsClosed() {
		t.Fatal("a TLS failure ended the retrying")
	}
	assertNotLost(t, lost)
}

// TestConnectErrorHidesThePassword: nats.go echoes a URL it cannot parse;
// Connect's error shows it with the password masked.
func TestConnectErrorHidesThePassword(t *testing.T) {
	_, _, err := natsx.Connect(config.NATS{NATSURL: "nats://orders:" + password + "@127.0.0.1:notaport"}, "test", slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("Connect accepted a bad port")
	}
	if strings.Contains(err.Error(), password) || !strings.Contains(err.Error(), "orders:xxxxx@127.0.0.1:notaport") {
		t.Fatalf("Connect = %q, want the URL with its password masked", err)
	}
}

// TestConnectLostWhenCredentialsAreRevoked: a running client whose user is
// removed from the server is told why, and stops retrying, rather than
// staying disconnected without a word.
func TestConnectLostWhenCredentialsAreRevoked(t *testing.T) {
	s := natstest.RunServer(t, natstest.WithUser("orders", password), natstest.WithUser("admin", "other"))
	nc, lost, _ := connect(t, config.NATS{NATSURL: s.URL(), NATSUser: "orders", NATSPassword: password})
	testkit.Eventually(t, 20*time.Second, "the connection", nc.IsConnected)
	s.Reload(t, natstest.WithUser("admin", "other"))
	select {
	case err := <-lost:
		if !strings.Contains(err.Error(), "check NATS_USER/NATS_PASSWORD") {
			t.Fatalf("lost = %v, want a hint at the credentials", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the revoked connection was not given up within 20 s")
	}
}
