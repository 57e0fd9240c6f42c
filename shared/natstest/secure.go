package natstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/jethook/jethook/shared/testkit"
)

// Option configures the server RunServer starts: TLS, and who may connect.
type Option func(tb testing.TB, o *server.Options)

// Apply applies options to o, for a server started later with Start.
func Apply(tb testing.TB, o *server.Options, options ...Option) {
	tb.Helper()
	for _, opt := range options {
		opt(tb, o)
	}
}

// WithTLS makes the server speak only TLS, with a certificate for
// 127.0.0.1 signed by ca.
func WithTLS(ca *testkit.CA) Option { return serveTLS(ca, false) }

// WithMutualTLS is WithTLS, and the server refuses clients without a
// certificate signed by ca.
func WithMutualTLS(ca *testkit.CA) Option { return serveTLS(ca, true) }

func serveTLS(ca *testkit.CA, verifyClients bool) Option {
	return func(tb testing.TB, o *server.Options) {
		tb.Helper()
		cert, key := ca.Issue(tb, "nats-server")
		tc := &server.TLSConfigOpts{CertFile: cert, KeyFile: key}
		if verifyClients {
			tc.CaFile, tc.Verify = ca.CertFile, true
		}
		cfg, err := server.GenTLSConfig(tc)
		if err != nil {
			tb.Fatal(err)
		}
		o.TLS, o.TLSVerify, o.TLSConfig = true, verifyClients, cfg
		// A loaded test machine can be slow to finish a handshake; the
		// default of two seconds would make that a flaky refusal.
		o.TLSTimeout = 10
	}
}

// WithUser lets a user with a password connect. Once a server has users
// or NKeys, it refuses every client without credentials.
func WithUser(user, password string) Option {
	return func(_ testing.TB, o *server.Options) {
		o.Users = append(o.Users, &server.User{Username: user, Password: password})
	}
}

// WithNKey lets the user with this public NKey connect (see NewNKeyUser).
func WithNKey(public string) Option {
	return func(_ testing.TB, o *server.Options) {
		o.Nkeys = append(o.Nkeys, &server.NkeyUser{Nkey: public})
	}
}

// WithOperator runs the server in operator (JWT) mode, trusting op, with
// op's accounts in a memory resolver: only users with a .creds file of
// op's account may connect (see Operator.UserCreds).
func WithOperator(op *Operator) Option {
	return func(_ testing.TB, o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{op.claims}
		o.AccountResolver = op.resolver
		o.SystemAccount = op.system
	}
}

// NewNKeyUser makes a user NKey and returns its public key, for WithNKey,
// and the path of a file holding its seed, as NATS_NKEY takes it.
func NewNKeyUser(tb testing.TB) (public, seedFile string) {
	tb.Helper()
	kp, public := newNKey(tb, nkeys.PrefixByteUser)
	seed, err := kp.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	seedFile = filepath.Join(tb.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, append(seed, '\n'), 0o600); err != nil {
		tb.Fatal(err)
	}
	return public, seedFile
}

// Operator is a NATS operator made when a test runs, with a system account
// and one application account that may use JetStream without limits.
type Operator struct {
	claims   *jwt.OperatorClaims
	account  nkeys.KeyPair
	system   string
	resolver *server.MemAccResolver
}

// NewOperator makes an operator and its two accounts.
func NewOperator(tb testing.TB) *Operator {
	tb.Helper()
	opKey, opPub := newNKey(tb, nkeys.PrefixByteOperator)
	_, sysPub := newNKey(tb, nkeys.PrefixByteAccount)
	accKey, accPub := newNKey(tb, nkeys.PrefixByteAccount)

	opClaims := jwt.NewOperatorClaims(opPub)
	opClaims.SystemAccount = sysPub
	opJWT, err := opClaims.Encode(opKey)
	if err != nil {
		tb.Fatal(err)
	}
	// The server takes the operator as decoded claims, as it would read
	// them from an operator JWT file.
	decoded, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		tb.Fatal(err)
	}
	app := jwt.NewAccountClaims(accPub)
	app.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	resolver := &server.MemAccResolver{}
	for _, claims := range []*jwt.AccountClaims{jwt.NewAccountClaims(sysPub), app} {
		token, err := claims.Encode(opKey)
		if err != nil {
			tb.Fatal(err)
		}
		if err := resolver.Store(claims.Subject, token); err != nil {
			tb.Fatal(err)
		}
	}
	return &Operator{claims: decoded, account: accKey, system: sysPub, resolver: resolver}
}

// UserCreds issues a new user of the application account and returns the
// path of its .creds file (user JWT and seed), as NATS_CREDS takes it.
func (op *Operator) UserCreds(tb testing.TB) string {
	tb.Helper()
	user, userPub := newNKey(tb, nkeys.PrefixByteUser)
	claims := jwt.NewUserClaims(userPub)
	claims.Name = "jethook-test"
	token, err := claims.Encode(op.account)
	if err != nil {
		tb.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// newNKey makes a key pair of the given kind and returns it with its
// public key.
func newNKey(tb testing.TB, kind nkeys.PrefixByte) (nkeys.KeyPair, string) {
	tb.Helper()
	kp, err := nkeys.CreatePair(kind)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	return kp, pub
}
