// Package problem writes errors as RFC 9457 problem details
// (application/problem+json) from one Fiber error handler.
package problem
