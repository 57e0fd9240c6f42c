package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names defined by Standard Webhooks. They are lower case as in the
// specification; http.Header canonicalizes them on Set and Get.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultMaxBodyBytes is the largest body Receive and Middleware accept
// unless Verifier.MaxBodyBytes says otherwise. 1 MiB is far above any
// event's size and far below what a flood of requests could exhaust.
const DefaultMaxBodyBytes = 1 << 20

// DefaultTolerance is how far a webhook timestamp may be from the verifier's
// clock, in either direction, before the message is rejected as a replay or a
// clock problem. Five minutes is the value recommended by Standard Webhooks.
const DefaultTolerance = 5 * time.Minute

// Sentinel errors returned (usually wrapped with context) by this package.
// Compare with errors.Is.
var (
	// ErrMissingHeader means one of the three webhook headers is empty.
	ErrMissingHeader = errors.New("webhook: missing header")
	// ErrInvalidHeader means a header is present but malformed or oversized.
	ErrInvalidHeader = errors.New("webhook: invalid header")
	// ErrTimestampTooOld means the timestamp is further in the past than the tolerance allows.
	ErrTimestampTooOld = errors.New("webhook: timestamp too old")
	// ErrTimestampTooNew means the timestamp is further in the future than the tolerance allows.
	ErrTimestampTooNew = errors.New("webhook: timestamp too new")
	// ErrNoMatchingSignature means no v1 signature in the header matches any secret.
	ErrNoMatchingSignature = errors.New("webhook: no matching signature")
	// ErrInvalidSecret means a secret could not be parsed or a verifier has no usable secret.
	ErrInvalidSecret = errors.New("webhook: invalid secret")
	// ErrRepeatedHeader means a webhook header was sent more than once.
	ErrRepeatedHeader = errors.New("webhook: header sent more than once")
	// ErrUnsupportedMediaType means the body is not plain JSON: another
	// Content-Type, or a Content-Encoding other than identity.
	ErrUnsupportedMediaType = errors.New("webhook: unsupported media type")
	// ErrBodyTooLarge means the body is longer than Verifier.MaxBodyBytes.
	ErrBodyTooLarge = errors.New("webhook: body too large")
)

const (
	secretPrefix = "whsec_"
	// minKeyLen keeps obviously weak keys out; 16 bytes is 128 bits of key material.
	minKeyLen = 16
	// generatedKeyLen matches the SHA-256 block-size-friendly length most providers use.
	generatedKeyLen = 32

	// maxIDLen and maxSignatureLen bound the work an unauthenticated request can cause.
	maxIDLen        = 256
	maxSignatureLen = 4096

	signatureVersion = "v1"
	// encodedMACLen is the length of a base64-encoded HMAC-SHA256 value.
	encodedMACLen = (sha256.Size + 2) / 3 * 4
)

// Secret is a webhook signing key. The key is unexported so that it cannot be
// printed or serialized by accident; String and GoString return a redacted form.
type Secret struct {
	key []byte
}

// ParseSecret parses a secret in the "whsec_<standard base64>" form. The
// returned errors never include the secret text, because parse failures tend
// to end up in logs.
func ParseSecret(s string) (Secret, error) {
	encoded, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w: missing %q prefix", ErrInvalidSecret, secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		// The decoder's error is dropped on purpose: only the fact matters,
		// and keeping it out avoids any hint about the secret's contents.
		return Secret{}, fmt.Errorf("%w: key is not valid standard base64", ErrInvalidSecret)
	}
	if len(key) < minKeyLen {
		return Secret{}, fmt.Errorf("%w: key is %d bytes, need at least %d", ErrInvalidSecret, len(key), minKeyLen)
	}
	return Secret{key: key}, nil
}

// ParseSecrets parses a comma-separated list of secrets, such as the value of
// an environment variable, so that a new secret can be rolled out next to the
// old one. Spaces around entries are ignored; empty entries are an error
// because they usually indicate a configuration mistake.
func ParseSecrets(list string) ([]Secret, error) {
	if strings.TrimSpace(list) == "" {
		return nil, fmt.Errorf("%w: no secrets given", ErrInvalidSecret)
	}
	parts := strings.Split(list, ",")
	secrets := make([]Secret, 0, len(parts))
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("%w: entry %d is empty", ErrInvalidSecret, i+1)
		}
		s, err := ParseSecret(part)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		secrets = append(secrets, s)
	}
	return secrets, nil
}

// GenerateSecret returns a new random secret in the "whsec_" form, suitable
// for ParseSecret.
func GenerateSecret() (string, error) {
	key := make([]byte, generatedKeyLen)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("webhook: generating secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// String returns a redacted placeholder so that logging a Secret never
// reveals the key.
func (s Secret) String() string { return secretPrefix + "***" }

// GoString is redacted as well, because %#v would otherwise print the key bytes.
func (s Secret) GoString() string { return "webhook.Secret{" + secretPrefix + "***}" }

// scratch holds the buffers that sum passes to the hash. They escape to the
// heap because hash.Hash is an interface, so callers allocate one scratch per
// call and reuse it for every secret instead of paying for it per secret.
type scratch struct {
	prefix [maxIDLen + 32]byte
	mac    [sha256.Size]byte
}

// sum writes the base64-encoded HMAC-SHA256 of id + "." + ts + "." + body to
// dst. The prefix is assembled in sc so that the common case of an id of at
// most maxIDLen bytes needs no further allocation.
func (s Secret) sum(dst *[encodedMACLen]byte, sc *scratch, id, ts string, body []byte) {
	prefix := append(sc.prefix[:0], id...)
	prefix = append(prefix, '.')
	prefix = append(prefix, ts...)
	prefix = append(prefix, '.')

	h := hmac.New(sha256.New, s.key)
	h.Write(prefix)
	h.Write(body)
	base64.StdEncoding.Encode(dst[:], h.Sum(sc.mac[:0]))
}

// Sign returns the webhook-signature header value: one
// "v1,<base64 HMAC-SHA256(key, id + "." + unix seconds + "." + body)>" entry
// per secret, separated by single spaces. Signing with several secrets lets
// receivers that know either the old or the new secret accept the message
// during rotation. Zero-value secrets are skipped because an empty key
// authenticates nothing.
func Sign(secrets []Secret, id string, ts time.Time, body []byte) string {
	var tsBuf [20]byte
	tsStr := string(strconv.AppendInt(tsBuf[:0], ts.Unix(), 10))

	var b strings.Builder
	b.Grow(len(secrets) * (len(signatureVersion) + 1 + encodedMACLen + 1))
	var enc [encodedMACLen]byte
	sc := new(scratch)
	for _, s := range secrets {
		if len(s.key) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		s.sum(&enc, sc, id, tsStr, body)
		b.WriteString(signatureVersion)
		b.WriteByte(',')
		b.Write(enc[:])
	}
	return b.String()
}

// SetHeaders sets the three Standard Webhooks headers on an outgoing request,
// so that senders cannot get the timestamp formatting out of step with the
// signature.
func SetHeaders(h http.Header, secrets []Secret, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(secrets, id, ts, body))
}

// Verifier checks incoming webhooks. The zero Tolerance, MaxBodyBytes and
// nil Now select the defaults, so a Verifier literal with only Secrets set
// is ready to use: Verify checks a message already in hand, while Receive,
// Middleware and the fiberwebhook package check a whole HTTP request.
type Verifier struct {
	// Secrets are tried in turn; a message is accepted if it was signed
	// with any of them, which allows secret rotation without downtime.
	Secrets []Secret
	// Tolerance is the maximum distance between the message timestamp and
	// Now, in either direction. Zero or negative means DefaultTolerance.
	Tolerance time.Duration
	// Now returns the current time; nil means time.Now. Tests set it to
	// make timestamp checks deterministic.
	Now func() time.Time
	// MaxBodyBytes is the largest request body Receive and Middleware
	// accept; zero or negative means DefaultMaxBodyBytes. Verify itself
	// checks whatever body it is given.
	MaxBodyBytes int64
}

// Verify checks the webhook-id, webhook-timestamp and webhook-signature
// header values against the raw request body. It accepts the message if any
// v1 entry in the space-separated signature list matches any secret, and
// ignores entries with other versions so that senders can add new schemes
// without breaking receivers. The timestamp must be within Tolerance of Now,
// compared at whole-second resolution because that is what the header
// carries.
func (v Verifier) Verify(id, timestamp, signature string, body []byte) error {
	if _, err := v.checkHeaders(id, timestamp, signature); err != nil {
		return err
	}
	return v.checkSignature(id, timestamp, signature, body)
}

// checkHeaders makes every check that needs no body: the secrets, the
// header values and the timestamp's distance from Now. It returns the
// timestamp. Receive runs it before reading the body, so that a stale or
// unsigned request costs no read and no HMAC.
func (v Verifier) checkHeaders(id, timestamp, signature string) (int64, error) {
	// A misconfigured verifier is reported first because it rejects every
	// message, whatever the request looks like.
	if !v.hasUsableSecret() {
		return 0, fmt.Errorf("%w: verifier has no non-empty secrets", ErrInvalidSecret)
	}
	switch {
	case id == "":
		return 0, fmt.Errorf("%w: %s", ErrMissingHeader, HeaderID)
	case timestamp == "":
		return 0, fmt.Errorf("%w: %s", ErrMissingHeader, HeaderTimestamp)
	case signature == "":
		return 0, fmt.Errorf("%w: %s", ErrMissingHeader, HeaderSignature)
	}
	if err := checkID(id); err != nil {
		return 0, err
	}
	if len(signature) > maxSignatureLen {
		return 0, fmt.Errorf("%w: %s is %d bytes, limit is %d", ErrInvalidHeader, HeaderSignature, len(signature), maxSignatureLen)
	}
	ts, err := parseTimestamp(timestamp)
	if err != nil {
		return 0, err
	}
	if err := v.checkTimestamp(ts); err != nil {
		return 0, err
	}
	// Skipping the HMAC when there is nothing to compare against keeps
	// junk requests cheap.
	if !hasV1Candidate(signature) {
		return 0, fmt.Errorf("%w: no %s entry of the expected length", ErrNoMatchingSignature, signatureVersion)
	}
	return ts, nil
}

// checkSignature computes the HMAC of the message under each secret and
// compares it, in constant time, with each v1 entry of the signature
// header. The header values must have passed checkHeaders.
func (v Verifier) checkSignature(id, timestamp, signature string, body []byte) error {
	var want, got [encodedMACLen]byte
	sc := new(scratch)
	for _, s := range v.Secrets {
		if len(s.key) == 0 {
			continue
		}
		// The timestamp header is canonical (checked by checkHeaders), so
		// signing its raw text is the same as signing the parsed integer.
		s.sum(&want, sc, id, timestamp, body)
		for entry := range strings.FieldsSeq(signature) {
			sig, ok := v1Signature(entry)
			if !ok {
				continue
			}
			// Copying into a fixed array lets hmac.Equal run without a
			// string-to-slice allocation; the length is public anyway.
			copy(got[:], sig)
			if hmac.Equal(got[:], want[:]) {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}

func (v Verifier) hasUsableSecret() bool {
	for _, s := range v.Secrets {
		if len(s.key) > 0 {
			return true
		}
	}
	return false
}

func (v Verifier) checkTimestamp(ts int64) error {
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	nowFn := v.Now
	if nowFn == nil {
		nowFn = time.Now
	}
	now := nowFn().Unix()
	// The differences are computed in uint64 so that extreme timestamps
	// from hostile input cannot overflow. A whole number of seconds d is
	// beyond tol exactly when d exceeds tol truncated to seconds.
	maxSkew := uint64(tol / time.Second)
	if ts < now {
		if d := uint64(now) - uint64(ts); d > maxSkew {
			return fmt.Errorf("%w: %ds in the past, tolerance is %s", ErrTimestampTooOld, d, tol)
		}
		return nil
	}
	if d := uint64(ts) - uint64(now); d > maxSkew {
		return fmt.Errorf("%w: %ds in the future, tolerance is %s", ErrTimestampTooNew, d, tol)
	}
	return nil
}

// checkID limits the id to a bounded run of printable, non-space ASCII,
// which is what real senders use and keeps log lines and the signed
// prefix well-formed.
func checkID(id string) error {
	if len(id) > maxIDLen {
		return fmt.Errorf("%w: %s is %d bytes, limit is %d", ErrInvalidHeader, HeaderID, len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: %s contains a byte outside printable ASCII at offset %d", ErrInvalidHeader, HeaderID, i)
		}
	}
	return nil
}

// parseTimestamp accepts only the canonical decimal form (no sign prefix,
// no leading zeros, no spaces). Other spellings of the same number would be
// signed differently by different implementations, so rejecting them keeps
// our result identical to every other verifier's.
func parseTimestamp(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is not an integer", ErrInvalidHeader, HeaderTimestamp)
	}
	var buf [20]byte
	if string(strconv.AppendInt(buf[:0], n, 10)) != s {
		return 0, fmt.Errorf("%w: %s is not in canonical decimal form", ErrInvalidHeader, HeaderTimestamp)
	}
	return n, nil
}

// v1Signature returns the signature part of a "v1,<sig>" entry if it has
// the length of an encoded HMAC-SHA256; anything else cannot match.
func v1Signature(entry string) (string, bool) {
	version, sig, ok := strings.Cut(entry, ",")
	if !ok || version != signatureVersion || len(sig) != encodedMACLen {
		return "", false
	}
	return sig, true
}

func hasV1Candidate(signature string) bool {
	for entry := range strings.FieldsSeq(signature) {
		if _, ok := v1Signature(entry); ok {
			return true
		}
	}
	return false
}
