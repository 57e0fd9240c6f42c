package config

import (
	"log/slog"
	"net/url"
	"strings"
)

// Mask is what a credential looks like in errors and logs.
const Mask = "xxxxx"

// Secret is a credential read from the environment, such as NATS_PASSWORD.
// It formats and logs as Mask, so that a configuration printed by mistake
// does not show it; string(s) is the value itself.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Mask
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// RedactURL returns raw, one URL or a comma-separated list of them, with
// every credential replaced by Mask: the password of a URL's user:password,
// or its whole userinfo when that is a single word, which NATS (and many
// HTTP APIs) take as a token, and the value of every query parameter,
// where webhook receivers often take theirs (?token=…), names kept. A
// value that does not parse as URLs, such as one with a bad port, is
// masked from its first "://" (or its start) to its last "@", and after
// its first "?", so that nothing that could be a password survives; the
// user name stays when it is plain.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		redacted, ok := redactOne(strings.TrimSpace(p))
		if !ok {
			return redactLoose(raw)
		}
		parts[i] = redacted
	}
	return strings.Join(parts, ",")
}

// redactOne redacts one URL, and reports false when it does not parse as an
// absolute URL with a host: then it may be a fragment of a password that
// contained a comma, and only the loose rule is safe.
func redactOne(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", false
	}
	if u.User == nil && u.RawQuery == "" {
		return raw, true
	}
	if u.User != nil {
		if _, hasPassword := u.User.Password(); hasPassword {
			u.User = url.UserPassword(u.User.Username(), Mask)
		} else {
			u.User = url.User(Mask)
		}
	}
	u.RawQuery = maskQuery(u.RawQuery)
	return u.String(), true
}

// maskQuery masks the value of each parameter of a raw query, and a
// parameter without a value (?s3cret) whole.
func maskQuery(raw string) string {
	if raw == "" {
		return ""
	}
	params := strings.Split(raw, "&")
	for i, p := range params {
		if name, _, ok := strings.Cut(p, "="); ok {
			params[i] = name + "=" + Mask
		} else if p != "" {
			params[i] = Mask
		}
	}
	return strings.Join(params, "&")
}

// redactLoose masks what may be userinfo or a query in text that is not a
// URL list.
func redactLoose(raw string) string {
	if q := strings.IndexByte(raw, '?'); q >= 0 {
		raw = raw[:q+1] + Mask
	}
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	userinfo := raw[start:at]
	mask := Mask
	if user, _, ok := strings.Cut(userinfo, ":"); ok && user != "" && !strings.ContainsAny(user, ",/?#") {
		mask = user + ":" + Mask
	}
	return raw[:start] + mask + raw[at:]
}
