// Package money holds amounts as integer minor units of an ISO 4217
// currency, so that no price ever passes through a float.
package money
