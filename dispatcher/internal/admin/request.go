package admin

import (
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/metrics"
	"github.com/jethook/jethook/shared/problem"
)

// List bounds.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// subscriptionID returns the path's id, copied out of the request's
// reused memory. An id that cannot be a subscription's is answered 404
// at once, like an unknown one, without touching NATS.
func subscriptionID(c *fiber.Ctx) (string, error) {
	id := strings.Clone(c.Params("id"))
	if !subscription.ValidID(id) {
		return "", problem.New(http.StatusNotFound, "no subscription with this id")
	}
	metrics.Annotate(c, "subscription_id", id)
	return id, nil
}

// etag is the ETag of a subscription at a KV revision.
func etag(revision uint64) string { return `"` + strconv.FormatUint(revision, 10) + `"` }

// ifMatch reads If-Match: 0 when absent or "*" (any revision), else the
// revision it names. required makes an absent header a 428: a PATCH
// without it could silently undo a change it never saw. A value that no
// ETag of ours can match is a 412, as RFC 9110 has it for tags that do not
// match.
func ifMatch(c *fiber.Ctx, required bool) (uint64, error) {
	raw := strings.TrimSpace(c.Get(fiber.HeaderIfMatch))
	switch {
	case raw == "" && required:
		return 0, problem.New(http.StatusPreconditionRequired,
			`send If-Match with the ETag of a GET (such as If-Match: "42"), or If-Match: * to change whatever is current`)
	case raw == "" || raw == "*":
		return 0, nil
	}
	inner, ok := strings.CutPrefix(raw, `"`)
	inner, ok2 := strings.CutSuffix(inner, `"`)
	rev, err := strconv.ParseUint(inner, 10, 64)
	if !ok || !ok2 || err != nil || rev == 0 || etag(rev) != raw {
		return 0, problem.New(http.StatusPreconditionFailed, `If-Match matches no revision: send the ETag of a GET, such as "42", quoted`)
	}
	return rev, nil
}

// body returns the raw request body when it is JSON of at most
// MaxBodyBytes. The raw bytes on purpose: c.Body() would inflate a
// compressed body past any limit. Content types other than JSON are
// refused with 415, and so is any Content-Encoding. An empty body is
// allowed only when optional; it needs no Content-Type then.
func body(c *fiber.Ctx, optional bool, types ...string) ([]byte, error) {
	b := c.Request().Body()
	if len(b) > MaxBodyBytes {
		return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d KiB", MaxBodyBytes>>10))
	}
	if len(b) == 0 && optional {
		return nil, nil
	}
	if enc := c.Get(fiber.HeaderContentEncoding); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, problem.New(http.StatusUnsupportedMediaType, "Content-Encoding is not supported; send the body uncompressed")
	}
	if len(types) == 0 {
		types = []string{fiber.MIMEApplicationJSON}
	}
	mt, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	known := false
	for _, t := range types {
		known = known || mt == t
	}
	if cs, ok := params["charset"]; err != nil || !known || (ok && !strings.EqualFold(cs, "utf-8")) {
		return nil, problem.New(http.StatusUnsupportedMediaType, "Content-Type must be "+strings.Join(types, " or ")+" (UTF-8)")
	}
	return b, nil
}

// query reads the query string: each parameter at most once, and only
// those in known, so that a typo (?limt=) is not silently ignored. It
// returns the values, and the errors map of what is refused.
func query(c *fiber.Ctx, known ...string) (map[string]string, map[string]string) {
	values := map[string]string{}
	errs := map[string]string{}
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		key := string(k)
		switch _, seen := values[key]; {
		case seen:
			errs[queryName(key)] = "is given more than once"
		case !slices.Contains(known, key):
			errs[queryName(key)] = "is not a known query parameter (" + strings.Join(known, ", ") + ")"
		default:
			values[key] = string(v)
		}
	})
	return values, errs
}

// limit reads ?limit=: DefaultLimit when absent, else an integer in
// [1, MaxLimit] written plainly.
func limit(values, errs map[string]string) int {
	v, ok := values["limit"]
	if !ok {
		return DefaultLimit
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLimit || strconv.Itoa(n) != v {
		errs["limit"] = fmt.Sprintf("must be an integer between 1 and %d", MaxLimit)
		return 0
	}
	return n
}

// listQuery reads ?limit= and ?cursor= of the subscription list.
func listQuery(c *fiber.Ctx) (after string, n int, err error) {
	values, errs := query(c, "limit", "cursor")
	n = limit(values, errs)
	if v, ok := values["cursor"]; ok {
		id, ok := decodeCursor(v)
		if !ok {
			errs["cursor"] = "is not a next_cursor of this API"
		}
		after = id
	}
	if len(errs) > 0 {
		return "", 0, problem.Invalid(errs)
	}
	return after, n, nil
}

func queryName(k string) string {
	if len(k) > 64 || strings.ContainsFunc(k, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "(an unknown query parameter)"
	}
	return k
}

// Cursors are opaque to clients: the id of the last subscription of the
// page, encoded, so that nobody builds one by hand and relies on it.
func encodeCursor(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func decodeCursor(s string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !subscription.ValidID(string(b)) {
		return "", false
	}
	return string(b), true
}
