// Package ssrf keeps webhook deliveries away from the dispatcher's own
// network. A Guard refuses, unless ALLOWED_NETWORKS opens them, every
// address that is not publicly routable: loopback, private, link-local
// (with the cloud metadata address 169.254.169.254), CGNAT, multicast,
// unspecified, broadcast and the reserved ranges, in IPv4, IPv6 and
// IPv4-mapped IPv6 form. It checks a URL when a subscription is created
// (CheckURL) and, because a name can resolve to anything at any time (DNS
// rebinding), the address actually dialled, in net.Dialer.Control. The
// HTTP client it builds never follows redirects and ignores proxy
// variables, so neither can take a request elsewhere.
package ssrf
