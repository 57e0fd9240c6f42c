package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds a graceful stop; the services promise 10 s.
const stopTimeout = 15 * time.Second

// proc is one child process. Its output goes to a log file; its peak
// resident memory is read from /proc before every stop, so that a process
// started twice reports the larger peak of its runs.
type proc struct {
	name string
	path string
	args []string
	env  []string
	log  *os.File

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	peak   int64 // bytes, the largest VmHWM seen
	// cpuDone is the CPU time of the runs that ended, cpuNow the last
	// reading of the current run, both in clock ticks.
	cpuDone, cpuNow int64
}

func newProc(name, path, logPath string, env []string, args ...string) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &proc{name: name, path: path, args: args, env: env, log: log}, nil
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.exited) {
		return fmt.Errorf("%s already runs as pid %d", p.name, p.cmd.Process.Pid)
	}
	fmt.Fprintf(p.log, "==== bench: start %s at %s ====\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
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
	p.cmd, p.exited = cmd, exited
	p.cpuDone, p.cpuNow = p.cpuDone+p.cpuNow, 0
	return nil
}

// running reports whether the process is alive, and how it ended if not.
func (p *proc) running() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false, "never started"
	}
	if isClosed(p.exited) {
		return false, p.cmd.ProcessState.String()
	}
	return true, ""
}

// stop records the peak memory, sends SIGTERM and waits up to stopTimeout,
// then kills. Stopping a process that is not running does nothing.
func (p *proc) stop() error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || isClosed(exited) {
		return nil
	}
	p.samplePeak()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM to %s (pid %d): %w", p.name, cmd.Process.Pid, err)
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-exited:
		return nil
	case <-t.C:
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s (pid %d) did not stop within %s of SIGTERM and was killed", p.name, cmd.Process.Pid, stopTimeout)
	}
}

// samplePeak reads the process's VmHWM, the peak of its resident set, and
// the CPU time it has used.
func (p *proc) samplePeak() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.exited) {
		return
	}
	if hwm, err := vmHWM(p.cmd.Process.Pid); err == nil {
		p.peak = max(p.peak, hwm)
	}
	if ticks, err := cpuTicks(strconv.Itoa(p.cmd.Process.Pid)); err == nil {
		p.cpuNow = ticks
	}
}

// cpuTime is the CPU time used by every run of the process so far, in
// clock ticks.
func (p *proc) cpuTime() int64 {
	p.samplePeak()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cpuDone + p.cpuNow
}

// peakRSS is the largest VmHWM seen so far, 0 when none could be read.
func (p *proc) peakRSS() int64 {
	p.samplePeak()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

func (p *proc) close() { _ = p.log.Close() }

// vmHWM reads the peak resident set size of pid from /proc, in bytes.
func vmHWM(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM of pid %d: %w", pid, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// cpuTicks reads the user and system CPU time of a process ("self" or a
// pid) from /proc, in clock ticks.
func cpuTicks(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces; the fields after
	// it are fixed: utime and stime are the 12th and 13th.
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b[i+1:]))
	if i < 0 || len(fields) < 13 {
		return 0, fmt.Errorf("malformed /proc/%s/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%s/stat: %w", pid, err)
	}
	return utime + stime, nil
}

// busyTicks reads the CPU time the whole machine spent busy from
// /proc/stat, in clock ticks, and the number of CPUs.
func busyTicks() (int64, int, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	var busy int64
	cpus := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			cpus++
			continue
		}
		// user nice system idle iowait irq softirq steal: all but idle and
		// iowait are busy.
		for i, f := range fields[1:min(len(fields), 9)] {
			if i == 3 || i == 4 {
				continue
			}
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/stat: %w", err)
			}
			busy += v
		}
	}
	return busy, cpus, nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cpuSample is the CPU time of every process of a run, and of the whole
// machine, at one moment.
type cpuSample struct {
	at    time.Time
	ticks map[string]int64
	busy  int64
}

func (h *harness) cpuSample() cpuSample {
	s := cpuSample{at: time.Now(), ticks: map[string]int64{}}
	for name, p := range h.processes() {
		s.ticks[name] = p.cpuTime()
	}
	s.ticks[selfName], _ = cpuTicks("self")
	s.busy, _, _ = busyTicks()
	return s
}

// selfName names the tool's own process, the load generator and the relay.
const selfName = "jethook-bench"

// cpuUse is what the processes spent during a phase: CPU time per request
// answered, by process, and the CPUs that other processes used meanwhile.
type cpuUse struct {
	perRequest map[string]time.Duration
	others     float64
}

// cpuSince returns the CPU each process used since s0, per request of n.
func (h *harness) cpuSince(s0 cpuSample, n int) *cpuUse {
	s1 := h.cpuSample()
	u := &cpuUse{perRequest: map[string]time.Duration{}}
	var ours int64
	for name, t1 := range s1.ticks {
		d := t1 - s0.ticks[name]
		ours += d
		if n > 0 {
			u.perRequest[name] = time.Duration(d) * time.Second / clockTicks / time.Duration(n)
		}
	}
	if wall := s1.at.Sub(s0.at).Seconds(); wall > 0 && s0.busy > 0 {
		u.others = max(float64(s1.busy-s0.busy-ours)/clockTicks/wall, 0)
	}
	return u
}
