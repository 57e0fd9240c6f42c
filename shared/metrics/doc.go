// Package metrics gives each service its own Prometheus registry, serves it
// at GET /metrics, and measures and logs every HTTP request: one counter
// increment, one latency observation and one log line per request, error
// answers included.
//
// Metric names are part of the operations contract (dashboards and alerts
// are written against them): every name starts with "jethook_", and route
// labels carry the route pattern, never the raw path, so that their
// cardinality stays bounded.
package metrics
