package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Env reads typed variables through getenv and collects one error per bad
// variable, so that a service reports every mistake at once and names each.
type Env struct {
	getenv func(string) string
	errs   []error
}

// New returns an Env reading through getenv (os.Getenv in main, a map in tests).
func New(getenv func(string) string) *Env { return &Env{getenv: getenv} }

// Err joins the errors found so far, or nil.
func (e *Env) Err() error { return errors.Join(e.errs...) }

func (e *Env) fail(name, value, want string) {
	e.errs = append(e.errs, fmt.Errorf("invalid %s=%q: %s", name, value, want))
}

// String returns the variable or def when it is unset or empty.
func (e *Env) String(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}

// Required returns the variable, recording an error when it is empty.
func (e *Env) Required(name, hint string) string {
	v := strings.TrimSpace(e.getenv(name))
	if v == "" {
		e.errs = append(e.errs, fmt.Errorf("missing %s: %s", name, hint))
	}
	return v
}

// Duration parses a Go duration ("1s", "1h") within [lo, hi].
func (e *Env) Duration(name string, def, lo, hi time.Duration) time.Duration {
	raw := e.String(name, "")
	if raw == "" {
		return def
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < lo || d > hi {
		e.fail(name, raw, fmt.Sprintf("want a duration between %s and %s, such as %s", lo, hi, def))
		return def
	}
	return d
}

// Int parses a base-10 integer within [lo, hi].
func (e *Env) Int(name string, def, lo, hi int) int {
	raw := e.String(name, "")
	if raw == "" {
		return def
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		e.fail(name, raw, fmt.Sprintf("want an integer between %d and %d", lo, hi))
		return def
	}
	return n
}

// Addr parses a host:port listen address; port 0 picks a free port.
func (e *Env) Addr(name, def string) string {
	raw := e.String(name, def)
	if _, port, err := net.SplitHostPort(raw); err != nil || port == "" {
		e.fail(name, raw, "want host:port, such as "+def)
		return def
	}
	return raw
}

// URL parses an absolute URL with one of the given schemes. An error shows
// the value with its password or token as Mask.
func (e *Env) URL(name, def string, schemes ...string) string {
	raw := e.String(name, def)
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		e.fail(name, RedactURL(raw), "want an absolute URL such as "+def)
		return def
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return raw
		}
	}
	e.fail(name, RedactURL(raw), "want a URL with scheme "+strings.Join(schemes, " or "))
	return def
}

// URLList parses a comma-separated list of absolute URLs with one of the
// given schemes, as NATS clients take the seed servers of a cluster. An
// error shows the value with its passwords and tokens as Mask.
func (e *Env) URLList(name, def string, schemes ...string) string {
	raw := e.String(name, def)
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || u.Host == "" || !slices.Contains(schemes, u.Scheme) {
			e.fail(name, RedactURL(raw), "want one URL or a comma-separated list, each such as "+def)
			return def
		}
	}
	return raw
}

// OneOf returns the variable when it is one of allowed.
func (e *Env) OneOf(name, def string, allowed ...string) string {
	raw := e.String(name, def)
	for _, a := range allowed {
		if raw == a {
			return raw
		}
	}
	e.fail(name, raw, "want one of "+strings.Join(allowed, ", "))
	return def
}

// Common holds the settings every service reads. The NATS connection
// settings are embedded, so cfg.NATSURL reads as before and cfg.NATS is
// what the connect function takes.
type Common struct {
	NATS
	StreamReplicas int
	LogFormat      string
	// GOGCSet says the operator chose the garbage collector's percentage
	// (GOGC, which the Go runtime reads itself); otherwise the service
	// tunes it (service.TuneGC).
	GOGCSet bool
}

// LoadCommon reads the NATS connection settings (see LoadNATS),
// STREAM_REPLICAS, LOG_FORMAT and whether GOGC is set.
func (e *Env) LoadCommon() Common {
	return Common{
		NATS:           e.LoadNATS(),
		StreamReplicas: e.Int("STREAM_REPLICAS", 1, 1, 5),
		LogFormat:      e.OneOf("LOG_FORMAT", "json", "json", "text"),
		GOGCSet:        e.String("GOGC", "") != "",
	}
}
