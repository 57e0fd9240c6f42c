package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Message is a webhook that passed every check of Receive: what a handler
// behind Middleware (or the fiberwebhook handler) works with.
type Message struct {
	// ID is the webhook-id header. A sender keeps it across the retries of
	// one message, so it is the key by which to drop duplicates.
	ID string
	// Timestamp is the webhook-timestamp header: when this attempt was
	// signed, within the Verifier's Tolerance of its clock.
	Timestamp time.Time
	// Body is the request body exactly as it was signed. It is the
	// receiver's own copy, so it may be kept after the request ends.
	Body []byte
}

// Refusal is why Receive turned a request away: the HTTP status to answer
// with, and a detail that is safe to show the sender. It never contains a
// secret or the body. Its ServeHTTP answers with it as problem+json.
type Refusal struct {
	// Status is 403 (forged, stale, unsigned or a webhook header sent
	// twice), 413 (body too large), 415 (not plain JSON), 400 (the body
	// could not be read) or 500 (a Verifier without a usable secret).
	Status int
	// Detail says what was wrong, for the problem's detail field.
	Detail string
	// Err is the cause; errors.Is matches it against this package's
	// sentinel errors (ErrTimestampTooOld, ErrBodyTooLarge, ...).
	Err error
}

// Error returns the detail, which is what a log line about the refusal
// needs to say.
func (f *Refusal) Error() string { return f.Detail }

// Unwrap returns the cause, so that errors.Is and errors.As see through a
// Refusal.
func (f *Refusal) Unwrap() error { return f.Err }

// problemContentType is the media type of a refusal's body (RFC 9457).
const problemContentType = "application/problem+json"

// problemBody is an RFC 9457 problem detail, the same fields in the same
// order as jethook's services write them, so that a refusal reads the
// same from this package, from the fiberwebhook handler and from the
// notifier.
type problemBody struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// ServeHTTP answers r with the refusal as application/problem+json, its
// instance being the request's path. Middleware answers every refusal this
// way; a caller of Receive can do the same after logging it.
func (f *Refusal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := json.Marshal(problemBody{Type: "about:blank", Title: http.StatusText(f.Status), Status: f.Status, Detail: f.Detail, Instance: r.URL.Path})
	if err != nil {
		// The fields are plain strings and an int: this cannot happen,
		// but a status alone is still a correct answer.
		w.WriteHeader(f.Status)
		return
	}
	w.Header().Set("Content-Type", problemContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(f.Status)
	_, _ = w.Write(b)
}

// Header is the part of a request's header that Receive reads: every
// value of one field. http.Header has this method. Receive asks for names
// in their canonical form (Webhook-Id, Content-Type); another framework's
// adapter must match them regardless of case, as HTTP does.
type Header interface {
	Values(key string) []string
}

// Receive checks one webhook request, given its header, its declared
// Content-Length (-1 when unknown) and its body, and returns the verified
// message or a *Refusal. The checks run cheapest first, so that junk is
// turned away before it costs a read or an HMAC:
//
//  1. a webhook-id, webhook-timestamp or webhook-signature header sent more
//     than once: 403, because which copy counts would depend on the parser;
//  2. a Content-Type other than application/json, or a Content-Encoding
//     other than identity: 415, because the signature covers the bytes on
//     the wire and a body must never be inflated to check it;
//  3. a Content-Length over MaxBodyBytes: 413, without reading the body;
//  4. a missing or malformed webhook header, or a timestamp outside the
//     Tolerance: 403;
//  5. then the body is read, never more than MaxBodyBytes+1 bytes of it
//     (413 if it runs past the limit), and its signature checked: 403.
//
// Receive answers 500 for every request while the Verifier has no usable
// secret, because that is a fault of the receiver, not of the sender.
// Middleware and the fiberwebhook package call Receive; call it directly
// to receive webhooks in another framework, or to log refusals.
func (v Verifier) Receive(h Header, contentLength int64, body io.Reader) (Message, error) {
	msg, ref := v.receive(h, contentLength, body)
	if ref != nil {
		return Message{}, ref
	}
	return msg, nil
}

func (v Verifier) receive(h Header, contentLength int64, body io.Reader) (Message, *Refusal) {
	if !v.hasUsableSecret() {
		return Message{}, &Refusal{Status: http.StatusInternalServerError,
			Detail: "the webhook receiver has no signing secret configured",
			Err:    fmt.Errorf("%w: verifier has no non-empty secrets", ErrInvalidSecret)}
	}
	// values holds the id, timestamp and signature, in this order.
	var values [3]string
	for i, name := range [...]string{HeaderID, HeaderTimestamp, HeaderSignature} {
		all := h.Values(canonicalKeys[i])
		if len(all) > 1 {
			return Message{}, &Refusal{Status: http.StatusForbidden,
				Detail: "signature verification failed: " + name + " header sent more than once",
				Err:    fmt.Errorf("%w: %s", ErrRepeatedHeader, name)}
		}
		if len(all) == 1 {
			values[i] = all[0]
		}
	}
	if detail := checkMediaType(first(h, "Content-Type"), first(h, "Content-Encoding")); detail != "" {
		return Message{}, &Refusal{Status: http.StatusUnsupportedMediaType, Detail: detail,
			Err: fmt.Errorf("%w: %s", ErrUnsupportedMediaType, detail)}
	}
	limit := v.maxBodyBytes()
	if contentLength > limit {
		return Message{}, tooLarge(limit)
	}
	id, timestamp, signature := values[0], values[1], values[2]
	ts, err := v.checkHeaders(id, timestamp, signature)
	if err != nil {
		return Message{}, forged(err)
	}
	raw, err := readBody(body, contentLength, limit)
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, ErrBodyTooLarge), errors.As(err, &tooBig):
		return Message{}, tooLarge(limit)
	case err != nil:
		return Message{}, &Refusal{Status: http.StatusBadRequest, Detail: "could not read the body: " + err.Error(),
			Err: fmt.Errorf("webhook: reading the body: %w", err)}
	}
	if err := v.checkSignature(id, timestamp, signature, raw); err != nil {
		return Message{}, forged(err)
	}
	return Message{ID: id, Timestamp: time.Unix(ts, 0).UTC(), Body: raw}, nil
}

// Middleware returns a handler that lets only verified webhooks through to
// next, each refusal answered as problem+json (see Receive for which, and
// in which order). next finds the verified message with FromContext, and
// can read the request body again: it is Message.Body.
func (v Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := r.Body
		if body == nil {
			body = http.NoBody
		}
		// Receive stops reading past the limit by itself; MaxBytesReader
		// also tells the server to close the connection then, rather than
		// read the rest of an oversized body to keep it alive.
		msg, ref := v.receive(r.Header, r.ContentLength, http.MaxBytesReader(w, body, v.maxBodyBytes()))
		if ref != nil {
			ref.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(NewContext(r.Context(), msg))
		r.Body = io.NopCloser(bytes.NewReader(msg.Body))
		r.ContentLength = int64(len(msg.Body))
		next.ServeHTTP(w, r)
	})
}

// messageKey is the context key of the verified message; a type of its
// own so that no other package can collide with it.
type messageKey struct{}

// NewContext returns a copy of ctx that carries msg, as Middleware hands
// it on. Tests of a handler can use it to call the handler directly.
func NewContext(ctx context.Context, msg Message) context.Context {
	return context.WithValue(ctx, messageKey{}, msg)
}

// FromContext returns the verified message that Middleware put in ctx,
// and false when there is none: the handler does not run behind
// Middleware.
func FromContext(ctx context.Context) (Message, bool) {
	msg, ok := ctx.Value(messageKey{}).(Message)
	return msg, ok
}

func (v Verifier) maxBodyBytes() int64 {
	if v.MaxBodyBytes > 0 {
		return v.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

func forged(err error) *Refusal {
	return &Refusal{Status: http.StatusForbidden, Detail: "signature verification failed: " + err.Error(), Err: err}
}

func tooLarge(limit int64) *Refusal {
	return &Refusal{Status: http.StatusRequestEntityTooLarge,
		Detail: "body is larger than " + strconv.FormatInt(limit, 10) + " bytes",
		Err:    fmt.Errorf("%w: limit is %d bytes", ErrBodyTooLarge, limit)}
}

// canonicalKeys are the webhook headers' names as http.Header keys them
// (HeaderID, HeaderTimestamp, HeaderSignature, in this order): looked up
// so, they need no conversion, which would allocate on every request.
var canonicalKeys = [...]string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}

// first is the header's first value, or "" when it is absent.
func first(h Header, name string) string {
	if values := h.Values(name); len(values) > 0 {
		return values[0]
	}
	return ""
}

// maxEchoedEncoding bounds how much of a Content-Encoding header a refusal
// repeats: enough for any real coding list, too little to reflect junk.
const maxEchoedEncoding = 32

// checkMediaType returns why a body of this Content-Type and
// Content-Encoding is refused, or "" when it is JSON sent as is.
func checkMediaType(contentType, encoding string) string {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil || mediaType != "application/json" {
		return "Content-Type must be application/json"
	}
	// Content codings are case-insensitive (RFC 9110, section 8.4.1).
	if encoding == "" || strings.EqualFold(encoding, "identity") {
		return ""
	}
	if len(encoding) <= maxEchoedEncoding && isPrintableASCII(encoding) {
		return "Content-Encoding " + encoding + " is not supported"
	}
	return "Content-Encoding must be identity"
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// readBody reads all of r, but never more than limit+1 bytes: one byte
// past the limit is enough to know the body is too large. A known length
// sizes the buffer once (one byte more, to see the end without growing);
// an unknown one doubles it, capped at limit+1, so that a body without a
// Content-Length costs at most about twice the limit.
func readBody(r io.Reader, contentLength, limit int64) ([]byte, error) {
	size := int64(bytes.MinRead)
	if contentLength >= 0 {
		size = contentLength + 1
	}
	buf := make([]byte, 0, min(size, limit+1))
	r = io.LimitReader(r, limit+1)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, ErrBodyTooLarge
			}
			next := int64(2 * cap(buf))
			if next >= limit {
				next = limit + 1
			}
			buf = append(make([]byte, 0, next), buf...)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) > limit {
		return nil, ErrBodyTooLarge
	}
	return buf, nil
}
