package ssrf

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// MaxURLLen bounds a webhook URL; real endpoints are far shorter, and the
// URL travels in every attempt log line.
const MaxURLLen = 2048

// A refused range and why it is refused, in the words of the error.
type blocked struct {
	prefix netip.Prefix
	reason string
}

// refused lists the special-purpose ranges of the IANA IPv4 and IPv6
// registries that are not globally reachable. The order matters only for
// the wording: the first match names the reason, so narrow ranges come
// before the wide ones that contain them (broadcast before 240.0.0.0/4).
var refused = func() []blocked {
	list := []struct{ cidr, reason string }{
		{"0.0.0.0/32", "unspecified address"},
		{"0.0.0.0/8", `"this network" address (0.0.0.0/8)`},
		{"10.0.0.0/8", "private address (RFC 1918)"},
		{"100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"},
		{"127.0.0.0/8", "loopback address"},
		{"169.254.0.0/16", "link-local address (cloud metadata lives at 169.254.169.254)"},
		{"172.16.0.0/12", "private address (RFC 1918)"},
		{"192.0.0.0/24", "reserved address (IETF protocol assignments)"},
		{"192.0.2.0/24", "reserved address (documentation)"},
		{"192.88.99.0/24", "reserved address (6to4 relay anycast)"},
		{"192.168.0.0/16", "private address (RFC 1918)"},
		{"198.18.0.0/15", "reserved address (benchmarking)"},
		{"198.51.100.0/24", "reserved address (documentation)"},
		{"203.0.113.0/24", "reserved address (documentation)"},
		{"224.0.0.0/4", "multicast address"},
		{"255.255.255.255/32", "broadcast address"},
		{"240.0.0.0/4", "reserved address (240.0.0.0/4)"},

		{"::/128", "unspecified address"},
		{"::1/128", "loopback address"},
		{"::/96", "reserved address (IPv4-compatible IPv6)"},
		{"64:ff9b:1::/48", "reserved address (local-use NAT64)"},
		{"100::/64", "reserved address (discard-only)"},
		{"2001::/23", "reserved address (IETF protocol assignments, Teredo)"},
		{"2001:db8::/32", "reserved address (documentation)"},
		{"3fff::/20", "reserved address (documentation)"},
		{"5f00::/16", "reserved address (SRv6 SIDs)"},
		{"fc00::/7", "private address (unique local, fc00::/7)"},
		{"fe80::/10", "link-local address"},
		{"fec0::/10", "reserved address (site-local)"},
		{"ff00::/8", "multicast address"},
	}
	out := make([]blocked, len(list))
	for i, b := range list {
		out[i] = blocked{netip.MustParsePrefix(b.cidr), b.reason}
	}
	return out
}()

// Prefixes that carry an IPv4 address inside an IPv6 one: the address is
// judged by the IPv4 address it leads to.
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// Guard decides which addresses webhooks may reach. The zero Guard allows
// only public addresses.
type Guard struct {
	allowed []netip.Prefix
	// resolver is nil (the default resolver) except in tests, which must
	// not send DNS queries anywhere.
	resolver *net.Resolver
}

// New returns a Guard that also allows the addresses inside allowed
// (ALLOWED_NETWORKS).
func New(allowed []netip.Prefix) *Guard {
	return &Guard{allowed: append([]netip.Prefix(nil), allowed...)}
}

// RefusedError says which dialled or literal address was refused, and why.
// Its message is meant for an attempt log and for operators.
type RefusedError struct {
	// Addr is the address refused: "ip:port" when dialled, the IP alone
	// when it was checked in a URL.
	Addr   string
	Reason string
	dial   bool
}

func (e *RefusedError) Error() string {
	if e.dial {
		return fmt.Sprintf("dial %s refused: %s, not in ALLOWED_NETWORKS", e.Addr, e.Reason)
	}
	return fmt.Sprintf("refused address %s: %s, not in ALLOWED_NETWORKS", e.Addr, e.Reason)
}

// Check returns a *RefusedError when addr may not be a webhook target.
func (g *Guard) Check(addr netip.Addr) error {
	if reason := g.refusal(addr); reason != "" {
		return &RefusedError{Addr: addr.String(), Reason: reason}
	}
	return nil
}

// refusal returns why addr is refused, or "" when it may be reached.
func (g *Guard) refusal(addr netip.Addr) string {
	addr = addr.WithZone("")
	if !addr.IsValid() {
		return "invalid address"
	}
	if g.isAllowed(addr) {
		return ""
	}
	form := ""
	target := addr
	switch {
	case addr.Is4In6():
		target, form = addr.Unmap(), " (IPv4-mapped)"
	case nat64.Contains(addr):
		b := addr.As16()
		target, form = netip.AddrFrom4([4]byte(b[12:16])), " (NAT64)"
	case sixTo4.Contains(addr):
		b := addr.As16()
		target, form = netip.AddrFrom4([4]byte(b[2:6])), " (6to4)"
	}
	if target != addr && g.isAllowed(target) {
		return ""
	}
	for _, b := range refused {
		if b.prefix.Contains(target) {
			return b.reason + form
		}
	}
	return ""
}

func (g *Guard) isAllowed(addr netip.Addr) bool {
	for _, p := range g.allowed {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Control is a net.Dialer Control function: it runs after name resolution,
// on the very address about to be connected, and refuses it when Check
// does. A network other than TCP, or an address it cannot parse, is refused
// too: the guard fails closed.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("dial %s refused: network %q is not TCP", address, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s refused: not an IP address and port", address)
	}
	if reason := g.refusal(ap.Addr()); reason != "" {
		return &RefusedError{Addr: address, Reason: reason, dial: true}
	}
	return nil
}

// Dialer returns a dialer that checks every address it connects to.
func (g *Guard) Dialer() *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.Control, Resolver: g.resolver}
}

// Transport returns an HTTP transport that dials through the guard. It
// ignores HTTP_PROXY and friends: a proxy would make the dialled address
// the proxy's, and the proxy would reach whatever the URL names.
func (g *Guard) Transport(conns int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	d := g.Dialer()
	t.DialContext = d.DialContext
	t.MaxIdleConns = max(t.MaxIdleConns, conns)
	t.MaxIdleConnsPerHost = max(conns, 1)
	return t
}

// Client returns an HTTP client whose every connection goes through the
// guard, bounded by timeout per request, that never follows a redirect: a
// 3xx is returned as the answer, since following it would send the event
// (and its signature) to a target nobody checked.
func (g *Guard) Client(timeout time.Duration, conns int) *http.Client {
	return &http.Client{
		Transport: g.Transport(conns),
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Refused reports whether err, as returned by a Client, is a refusal by a
// guard, and returns it so that its own clear message can be logged
// instead of the longer chain around it.
func Refused(err error) (*RefusedError, bool) {
	var re *RefusedError
	ok := errors.As(err, &re)
	return re, ok
}

// CheckURL checks a webhook URL when a subscription is created or
// changed. It returns an error whose message is meant for the API's
// field error: the URL must be absolute http or https with a host, no user
// information and no fragment, and a literal IP address must not be
// refused by Check. Names are not resolved here: what they resolve to is
// checked at every dial.
func (g *Guard) CheckURL(raw string) error {
	if raw == "" {
		return errors.New("is required")
	}
	if len(raw) > MaxURLLen {
		return fmt.Errorf("must be at most %d bytes", MaxURLLen)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r > '~' }) {
		return errors.New("must be printable ASCII without spaces (percent-encode the rest)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("must be an absolute URL such as https://example.com/webhooks")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must use http or https")
	case u.Opaque != "" || u.Host == "":
		return errors.New("must be an absolute URL with a host, such as https://example.com/webhooks")
	case u.User != nil:
		return errors.New("must not contain a user name or password; the webhook signature authenticates the sender")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("must not contain a fragment (#...)")
	}
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return errors.New("has an invalid port")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return errors.New("has an invalid port")
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		if strings.Contains(host, "%") {
			return errors.New("must not name an IPv6 zone")
		}
		if err := g.Check(addr); err != nil {
			return err
		}
		return nil
	}
	if strings.HasPrefix(u.Host, "[") {
		return errors.New("has an invalid IPv6 address")
	}
	return checkHostname(host)
}

func parsePort(p string) (int, error) {
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, errors.New("not a number")
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return 0, errors.New("out of range")
		}
	}
	return n, nil
}

// checkHostname accepts DNS names of letters, digits, hyphens and
// underscores. A name whose last label is numeric is refused: it is no DNS
// name, and resolvers that follow inet_aton read forms such as 2130706433
// or 0x7f.1 as IPv4 addresses (127.0.0.1), which would pass as a name here.
func checkHostname(host string) error {
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return errors.New("must have a valid host name")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("must have a valid host name")
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errors.New("must have a valid host name (use punycode for internationalised names)")
			}
		}
	}
	last := strings.ToLower(labels[len(labels)-1])
	if isNumeric(last) {
		return errors.New("must name an IP address in its standard form or a DNS name")
	}
	return nil
}

// isNumeric reports whether a label reads as a number in decimal, octal or
// hexadecimal (0x...), as inet_aton parses it.
func isNumeric(label string) bool {
	digits := label
	hex := false
	if rest, ok := strings.CutPrefix(label, "0x"); ok {
		digits, hex = rest, true
	}
	if digits == "" {
		return hex
	}
	for _, c := range digits {
		isDigit := c >= '0' && c <= '9'
		if !isDigit && !(hex && c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
