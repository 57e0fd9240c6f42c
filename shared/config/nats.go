package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
)

// DefaultNATSURL is where a service looks for NATS when NATS_URL is unset:
// the embedded server of `make run`.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// NATS is how a service connects to NATS. Each field is named after its
// variable. Files are checked when the configuration is read and read
// again by the client at each connection, so a renewed .creds file is
// picked up at the next reconnect.
type NATS struct {
	// NATSURL is one server URL or a comma-separated list (a cluster's
	// seeds). A URL may carry user:password, or a token, as its userinfo.
	NATSURL string
	// NATSCreds is the path of a .creds file: a user JWT and its NKey seed,
	// for servers in operator (JWT) mode.
	NATSCreds string
	// NATSNKey is the path of a file holding a user NKey seed.
	NATSNKey string
	// NATSUser and NATSPassword are a user of the server's authorization
	// block, as an alternative to user:password in NATSURL.
	NATSUser     string
	NATSPassword Secret
	// NATSTLSCA is a PEM file of the CAs that sign the servers'
	// certificates. Setting it, or a client certificate, makes the client
	// insist on TLS.
	NATSTLSCA string
	// NATSTLSCert and NATSTLSKey are the client's certificate and key, for
	// servers that verify clients (mTLS).
	NATSTLSCert string
	NATSTLSKey  string
}

// Auth names the variables that carry the credentials, for a hint when the
// server refuses them; "" when none is set.
func (n NATS) Auth() string {
	methods := n.authMethods()
	if len(methods) == 0 {
		return ""
	}
	return strings.Join(methods, " and ")
}

// authMethods lists each way of authenticating that is set, by the
// variables that set it. More than one is a conflict.
func (n NATS) authMethods() []string {
	var methods []string
	if n.NATSCreds != "" {
		methods = append(methods, "NATS_CREDS")
	}
	if n.NATSNKey != "" {
		methods = append(methods, "NATS_NKEY")
	}
	if n.NATSUser != "" || n.NATSPassword != "" {
		methods = append(methods, "NATS_USER/NATS_PASSWORD")
	}
	if userinfo := urlUserinfo(n.NATSURL); userinfo != "" {
		methods = append(methods, "the "+userinfo+" in NATS_URL")
	}
	return methods
}

// urlUserinfo says what credentials the URLs of list carry: "user and
// password", "token" or "" for none.
func urlUserinfo(list string) string {
	kind := ""
	for _, one := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			return "user and password"
		}
		kind = "token"
	}
	return kind
}

// LoadNATS reads NATS_URL and the NATS_* credential and TLS variables. It
// checks every file now, so that a typo stops the service at start with a
// line naming the variable instead of an endless retry later, and it never
// echoes a password, token or seed.
func (e *Env) LoadNATS() NATS {
	n := NATS{
		NATSURL:      e.URLList("NATS_URL", DefaultNATSURL, "nats", "tls", "ws", "wss"),
		NATSCreds:    e.String("NATS_CREDS", ""),
		NATSNKey:     e.String("NATS_NKEY", ""),
		NATSUser:     e.String("NATS_USER", ""),
		NATSPassword: Secret(e.String("NATS_PASSWORD", "")),
		NATSTLSCA:    e.String("NATS_TLS_CA", ""),
		NATSTLSCert:  e.String("NATS_TLS_CERT", ""),
		NATSTLSKey:   e.String("NATS_TLS_KEY", ""),
	}
	if n.NATSCreds != "" {
		e.check("NATS_CREDS", n.NATSCreds, checkCreds)
	}
	if n.NATSNKey != "" {
		e.check("NATS_NKEY", n.NATSNKey, checkSeed)
	}
	e.pair("NATS_USER", n.NATSUser != "", "NATS_PASSWORD", n.NATSPassword != "")
	if methods := n.authMethods(); len(methods) > 1 {
		e.errs = append(e.errs, fmt.Errorf("conflicting NATS credentials (%s): set only one way to authenticate", strings.Join(methods, ", ")))
	}
	if n.NATSTLSCA != "" {
		e.check("NATS_TLS_CA", n.NATSTLSCA, checkCA)
	}
	if e.pair("NATS_TLS_CERT", n.NATSTLSCert != "", "NATS_TLS_KEY", n.NATSTLSKey != "") && n.NATSTLSCert != "" {
		certOK := e.check("NATS_TLS_CERT", n.NATSTLSCert, checkCert)
		keyOK := e.check("NATS_TLS_KEY", n.NATSTLSKey, checkKey)
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(n.NATSTLSCert, n.NATSTLSKey); err != nil {
				e.errs = append(e.errs, fmt.Errorf("invalid NATS_TLS_CERT/NATS_TLS_KEY: they do not form a pair: %v", err))
			}
		}
	}
	return n
}

// pair records an error when only one of two variables that go together
// is set, and reports whether they agree.
func (e *Env) pair(first string, firstSet bool, second string, secondSet bool) bool {
	switch {
	case firstSet && !secondSet:
		e.errs = append(e.errs, fmt.Errorf("missing %s: %s is set; set both or neither", second, first))
	case secondSet && !firstSet:
		e.errs = append(e.errs, fmt.Errorf("missing %s: %s is set; set both or neither", first, second))
	default:
		return true
	}
	return false
}

// check reads the file at path and validates its contents, recording one
// error naming the variable. The file's contents never reach the error.
func (e *Env) check(name, path string, valid func([]byte) error) bool {
	b, err := os.ReadFile(path)
	if err == nil {
		err = valid(b)
		clear(b)
	} else {
		err = fmt.Errorf("cannot read it: %w", errors.Unwrap(err))
	}
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("invalid %s=%q: %v", name, path, err))
		return false
	}
	return true
}

// checkCreds accepts a .creds file: a valid user JWT, not expired, and the
// user seed it was issued for.
func checkCreds(b []byte) error {
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return errors.New("not a .creds file")
	}
	claims, err := jwt.DecodeUserClaims(strings.TrimSpace(token))
	if err != nil {
		return errors.New("no valid user JWT in it; want a .creds file such as `nsc generate creds` writes")
	}
	if claims.Expires > 0 && time.Now().Unix() > claims.Expires {
		return fmt.Errorf("its user JWT expired at %s", time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339))
	}
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil {
		return errors.New("no user seed in it; want a .creds file such as `nsc generate creds` writes")
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || pub != claims.Subject {
		return errors.New("its seed is not the key its JWT was issued to")
	}
	return nil
}

// checkSeed accepts a file holding a user NKey seed (SU…).
func checkSeed(b []byte) error {
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil {
		return errors.New("no user NKey seed in it; want the seed (SU…) that `nk -gen user` prints")
	}
	kp.Wipe()
	return nil
}

// checkCA accepts a PEM file with at least one certificate.
func checkCA(b []byte) error {
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return errors.New("no PEM certificate in it")
	}
	return nil
}

// checkCert accepts a PEM file whose first block is a certificate.
func checkCert(b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return errors.New("no PEM certificate in it")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return fmt.Errorf("the certificate does not parse: %v", err)
	}
	return nil
}

// checkKey accepts a PEM file with a private key block. Whether the key
// parses, and matches the certificate, is for tls.LoadX509KeyPair to say.
func checkKey(b []byte) error {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return errors.New("no PEM private key in it")
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return nil
		}
	}
}
