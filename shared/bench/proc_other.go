//go:build !unix

package bench

import "os/exec"

// ownGroup does nothing where process groups do not exist.
func ownGroup(*exec.Cmd) {}
