package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/testkit"
)

// TestLoadNATS: each credential and TLS variable is checked at start, and
// each mistake is one line naming its variable, with no password or seed.
func TestLoadNATS(t *testing.T) {
	ca := testkit.NewCA(t)
	cert, key := ca.Issue(t, "client")
	otherCert, _ := ca.Issue(t, "other")
	_, seedFile := natstest.NewNKeyUser(t)
	op := natstest.NewOperator(t)
	creds := op.UserCreds(t)
	seed := strings.TrimSpace(read(t, seedFile))
	dir := t.TempDir()
	garbage := write(t, dir, "garbage", "not what you think\n")
	expired := expiredCreds(t, dir)
	mixed := write(t, dir, "mixed.creds", mixCreds(t, creds, op.UserCreds(t)))
	accountSeed := write(t, dir, "account.nk", accountSeedText(t))

	tests := []struct {
		name string
		env  map[string]string
		// want is the one line expected, or "" for none.
		want string
	}{
		{"nothing set", map[string]string{}, ""},
		{"creds and mutual TLS", map[string]string{"NATS_URL": "tls://nats:4222", "NATS_CREDS": creds, "NATS_TLS_CA": ca.CertFile, "NATS_TLS_CERT": cert, "NATS_TLS_KEY": key}, ""},
		{"NKey", map[string]string{"NATS_NKEY": seedFile}, ""},
		{"user and password", map[string]string{"NATS_USER": "orders", "NATS_PASSWORD": "s3cret"}, ""},
		{"user and password in the URL", map[string]string{"NATS_URL": "nats://orders:s3cret@nats:4222"}, ""},
		{"creds file missing", map[string]string{"NATS_CREDS": filepath.Join(dir, "nope.creds")}, `invalid NATS_CREDS="` + filepath.Join(dir, "nope.creds") + `": cannot read it: no such file or directory`},
		{"creds file is garbage", map[string]string{"NATS_CREDS": garbage}, `invalid NATS_CREDS="` + garbage + `": no valid user JWT in it`},
		{"creds file is a seed", map[string]string{"NATS_CREDS": seedFile}, `invalid NATS_CREDS="` + seedFile + `": no valid user JWT in it`},
		{"creds expired", map[string]string{"NATS_CREDS": expired}, `invalid NATS_CREDS="` + expired + `": its user JWT expired at`},
		{"creds with the seed of another user", map[string]string{"NATS_CREDS": mixed}, `invalid NATS_CREDS="` + mixed + `": its seed is not the key its JWT was issued to`},
		{"NKey file is garbage", map[string]string{"NATS_NKEY": garbage}, `invalid NATS_NKEY="` + garbage + `": no user NKey seed in it`},
		{"NKey is an account's", map[string]string{"NATS_NKEY": accountSeed}, `invalid NATS_NKEY="` + accountSeed + `": no user NKey seed in it`},
		{"NKey file is a directory", map[string]string{"NATS_NKEY": dir}, `invalid NATS_NKEY="` + dir + `": cannot read it: is a directory`},
		{"user without password", map[string]string{"NATS_USER": "orders"}, "missing NATS_PASSWORD: NATS_USER is set; set both or neither"},
		{"password without user", map[string]string{"NATS_PASSWORD": "s3cret"}, "missing NATS_USER: NATS_PASSWORD is set; set both or neither"},
		{"creds and NKey", map[string]string{"NATS_CREDS": creds, "NATS_NKEY": seedFile}, "conflicting NATS credentials (NATS_CREDS, NATS_NKEY): set only one way to authenticate"},
		{"user and password twice", map[string]string{"NATS_URL": "nats://orders:s3cret@nats:4222", "NATS_USER": "orders", "NATS_PASSWORD": "s3cret"}, "conflicting NATS credentials (NATS_USER/NATS_PASSWORD, the user and password in NATS_URL): set only one way to authenticate"},
		{"NKey and a token", map[string]string{"NATS_URL": "nats://s3cret@nats:4222", "NATS_NKEY": seedFile}, "conflicting NATS credentials (NATS_NKEY, the token in NATS_URL): set only one way to authenticate"},
		{"CA is not PEM", map[string]string{"NATS_TLS_CA": garbage}, `invalid NATS_TLS_CA="` + garbage + `": no PEM certificate in it`},
		{"CA missing", map[string]string{"NATS_TLS_CA": filepath.Join(dir, "ca.pem")}, `invalid NATS_TLS_CA="` + filepath.Join(dir, "ca.pem") + `": cannot read it: no such file or directory`},
		{"certificate without key", map[string]string{"NATS_TLS_CERT": cert}, "missing NATS_TLS_KEY: NATS_TLS_CERT is set; set both or neither"},
		{"key without certificate", map[string]string{"NATS_TLS_KEY": key}, "missing NATS_TLS_CERT: NATS_TLS_KEY is set; set both or neither"},
		{"certificate is a key", map[string]string{"NATS_TLS_CERT": key, "NATS_TLS_KEY": key}, `invalid NATS_TLS_CERT="` + key + `": no PEM certificate in it`},
		{"key is a certificate", map[string]string{"NATS_TLS_CERT": cert, "NATS_TLS_KEY": cert}, `invalid NATS_TLS_KEY="` + cert + `": no PEM private key in it`},
		{"key of another certificate", map[string]string{"NATS_TLS_CERT": otherCert, "NATS_TLS_KEY": key}, "invalid NATS_TLS_CERT/NATS_TLS_KEY: they do not form a pair: tls: private key does not match public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(func(k string) string { return tt.env[k] })
			n := e.LoadNATS()
			err := e.Err()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				if tt.env["NATS_URL"] == "" && n.NATSURL != DefaultNATSURL {
					t.Fatalf("NATS_URL = %q, want the default", n.NATSURL)
				}
				return
			}
			if err == nil {
				t.Fatalf("Err = nil, want %q", tt.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, tt.want) {
				t.Fatalf("Err = %q, want one line starting %q", msg, tt.want)
			}
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, seed) {
				t.Fatalf("Err = %q shows a credential", msg)
			}
		})
	}
}

// TestLoadNATSDefaults: with nothing set, `make run` connects as before.
func TestLoadNATSDefaults(t *testing.T) {
	e := New(func(string) string { return "" })
	if n := e.LoadNATS(); n != (NATS{NATSURL: "nats://127.0.0.1:4222"}) || e.Err() != nil {
		t.Fatalf("LoadNATS = %+v, %v", n, e.Err())
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mixCreds is a .creds file with the JWT of one and the seed of another.
func mixCreds(t *testing.T, jwtFrom, seedFrom string) string {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT([]byte(read(t, jwtFrom)))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := jwt.ParseDecoratedUserNKey([]byte(read(t, seedFrom)))
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	// FormatUserConfig refuses to pair them, so the file is put together
	// from its two decorated parts.
	decoratedJWT, err := jwt.DecorateJWT(token)
	if err != nil {
		t.Fatal(err)
	}
	decoratedSeed, err := jwt.DecorateSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(decoratedJWT) + "\n" + string(decoratedSeed)
}

// expiredCreds writes a .creds file whose JWT expired an hour ago.
func expiredCreds(t *testing.T, dir string) string {
	t.Helper()
	account, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	claims := jwt.NewUserClaims(pub)
	claims.Expires = time.Now().Add(-time.Hour).Unix()
	token, err := claims.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	b, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return write(t, dir, "expired.creds", string(b))
}

func accountSeedText(t *testing.T) string {
	t.Helper()
	kp, _ := nkeys.CreateAccount()
	seed, _ := kp.Seed()
	return string(seed) + "\n"
}
