//go:build unix

package bench

import (
	"os/exec"
	"syscall"
)

// ownGroup puts the child in a process group of its own, so that a Ctrl-C
// in the terminal reaches only the tool, which then stops its children in
// order.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
