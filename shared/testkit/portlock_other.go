//go:build !unix

package testkit

// claimPort has no lock to take here: the bind check alone decides.
func claimPort(int) bool { return true }
