// Package metricstest reads a service's /metrics endpoint in tests the way
// Prometheus scrapes it, so that tests assert on what an operator sees.
package metricstest
