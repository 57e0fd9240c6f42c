package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one binary run as a child process, started again after every
// fault with the same arguments and environment. Its output goes to a log
// file that collects every run.
type proc struct {
	name string
	path string
	args []string
	env  []string
	log  *os.File

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited and been reaped
	// down says the harness stopped the process on purpose; an exit while
	// it is false is a crash.
	down   bool
	starts int
}

func newProc(name, path, logPath string, env []string, args ...string) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &proc{name: name, path: path, args: args, env: env, log: log, down: true}, nil
}

// start runs the binary. It is an error to start a process that runs.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.exited) {
		return fmt.Errorf("%s is already running as pid %d", p.name, p.cmd.Process.Pid)
	}
	p.starts++
	fmt.Fprintf(p.log, "==== chaos: start %d of %s at %s ====\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	// Handing over the file itself, not a pipe, means no goroutine copies
	// output and a killed process leaves nothing to wait for.
	cmd.Stdout, cmd.Stderr = p.log, p.log
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited, p.down = cmd, exited, false
	return nil
}

// stopResult says how a stop went.
type stopResult struct {
	took time.Duration
	// state is how the process ended.
	state *os.ProcessState
	// forced is true when the process outlived the timeout and was killed.
	forced bool
}

// stop sends sig to the process and waits up to timeout for it to exit;
// a process still running then is killed. The process counts as stopped on
// purpose from now on, until the next start.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) (stopResult, error) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.down = true
	p.mu.Unlock()
	if cmd == nil {
		return stopResult{}, fmt.Errorf("%s was never started", p.name)
	}
	if closed(exited) {
		return stopResult{state: cmd.ProcessState}, fmt.Errorf("%s had already exited: %s", p.name, cmd.ProcessState)
	}
	start := time.Now()
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return stopResult{}, fmt.Errorf("signal %s to %s (pid %d): %w", sig, p.name, cmd.Process.Pid, err)
	}
	res := stopResult{}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		res.forced = true
		_ = cmd.Process.Kill()
		<-exited
	}
	res.took, res.state = time.Since(start), cmd.ProcessState
	return res, nil
}

// crashed reports, once per crash, that the process exited although the
// harness did not stop it, with how it ended. The process then counts as
// down until it is started again.
func (p *proc) crashed() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down || p.cmd == nil || !closed(p.exited) {
		return "", false
	}
	p.down = true
	return p.cmd.ProcessState.String(), true
}

// pid is the id of the running process, or 0.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.exited) {
		return 0
	}
	return p.cmd.Process.Pid
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
