//go:build unix

package chaos

import (
	"os/exec"
	"syscall"
)

// ownGroup puts the child in a process group of its own, so that a Ctrl-C
// in the terminal reaches only the harness, which then stops its children
// in order instead of finding them gone.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
