package ssrf

import "net"

// SetResolver makes g resolve names through r.
func SetResolver(g *Guard, r *net.Resolver) { g.resolver = r }
