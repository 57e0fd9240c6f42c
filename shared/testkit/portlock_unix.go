//go:build unix

package testkit

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// portLocks is the file whose bytes stand for ports: this process holds a
// write lock on the byte of each port it handed out. Record locks belong
// to the process and end with it, however it ends, so no stale lock
// outlives a crashed test; and the file stays open for the process's
// life, since closing any descriptor of it would drop every lock.
var portLocks struct {
	once sync.Once
	f    *os.File
}

// claimPort reports whether port is now this process's: no other process
// of ours (each test binary of `go test ./...` is one, and they run at
// once) holds it. Where the lock file cannot be had, it says yes and the
// bind check alone decides, as before.
func claimPort(port int) bool {
	portLocks.once.Do(func() {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "jethook-test-ports.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err == nil {
			portLocks.f = f
		}
	})
	if portLocks.f == nil {
		return true
	}
	lock := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: int64(port), Len: 1}
	err := syscall.FcntlFlock(portLocks.f.Fd(), syscall.F_SETLK, &lock)
	// Only these say another process holds it; a file system without
	// record locks says something else, and the bind check decides.
	return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EACCES)
}
