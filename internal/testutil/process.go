package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Long-running helper processes, whose output a test watches line by line
// while they run: the example programs (the test binary doubles as the
// program, a helper whose HelperFunc is the program's main) and children
// that print what they did.

// HelperCommand returns the command that runs the test binary as the helper
// name (see Main) with args, for a test that sets more fields (SysProcAttr,
// Stdin) before starting it itself or with Start.
func HelperCommand(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary to re-execute: %v", err)
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = helperEnviron(name)
	return cmd
}

// helperEnviron is the environment of a helper process: the test's, with
// HelperEnv naming the helper. Under -race a process sleeps one second at
// exit (GORACE atexit_sleep_ms) unless told otherwise; helpers exit often.
func helperEnviron(name string) []string {
	gorace := "atexit_sleep_ms=0"
	if g := os.Getenv("GORACE"); g != "" {
		gorace = g + " " + gorace
	}
	return append(os.Environ(), HelperEnv+"="+name, "GORACE="+gorace)
}

// StartHelper starts the test binary as the helper name with args and
// collects its output by line. It is killed when the test ends if it is
// still running.
func StartHelper(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return Start(t, HelperCommand(t, name, args...))
}

// RunHelperExit runs the helper name with args, waits up to timeout for it
// to exit and returns its exit code and output. Unlike RunHelper, a nonzero
// exit code is a result, not an error.
func RunHelperExit(t testing.TB, timeout time.Duration, name string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := StartHelper(t, name, args...)
	code = p.Wait(t, timeout)
	return code, p.Stdout.String(), p.Stderr.String()
}

// Lines collects the lines written to a pipe and lets a test wait for one.
// It is safe for concurrent use.
type Lines struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line and at EOF
	eof     bool
	name    string
}

func newLines(name string, r io.Reader) *Lines {
	l := &Lines{changed: make(chan struct{}), name: name}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
		// Drain whatever is left so the writer never blocks.
		_, _ = io.Copy(io.Discard, r)
		l.mu.Lock()
		l.eof = true
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}()
	return l
}

// All returns the lines collected so far.
func (l *Lines) All() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// String returns the lines collected so far, joined.
func (l *Lines) String() string { return strings.Join(l.All(), "\n") }

// Find waits up to timeout for a line for which match returns true, looking
// at the lines collected so far first. It fails the test on timeout or when
// the stream ends without a match.
func (l *Lines) Find(t testing.TB, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	line, err := l.findFrom(0, timeout, match)
	if err != nil {
		t.Fatalf("%s: waiting for %s: %v; %s so far:\n%s", l.name, what, err, l.name, l.String())
	}
	return line
}

// WaitFrom is Wait looking only at lines after the first n.
func (l *Lines) WaitFrom(n int, timeout time.Duration, match func(string) bool) (string, error) {
	return l.findFrom(n, timeout, match)
}

func (l *Lines) findFrom(seen int, timeout time.Duration, match func(string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for ; seen < len(l.lines); seen++ {
			if match(l.lines[seen]) {
				s := l.lines[seen]
				l.mu.Unlock()
				return s, nil
			}
		}
		eof, ch := l.eof, l.changed
		l.mu.Unlock()
		if eof {
			return "", errors.New("stream ended")
		}
		select {
		case <-ch:
		case <-deadline.C:
			return "", fmt.Errorf("no match within %v", timeout)
		}
	}
}

// Len returns the number of lines collected so far.
func (l *Lines) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// Since returns the lines collected after the first n.
func (l *Lines) Since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n > len(l.lines) {
		return nil
	}
	return append([]string(nil), l.lines[n:]...)
}

// Wait is Find without failing the test: it returns an error on timeout or
// when the stream ends without a match.
func (l *Lines) Wait(timeout time.Duration, match func(string) bool) (string, error) {
	return l.findFrom(0, timeout, match)
}

// FindPrefix waits for a line that starts with prefix.
func (l *Lines) FindPrefix(t testing.TB, timeout time.Duration, prefix string) string {
	t.Helper()
	return l.Find(t, timeout, fmt.Sprintf("a line starting with %q", prefix), func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// WaitEOF waits until the stream ends.
func (l *Lines) WaitEOF(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		eof, ch := l.eof, l.changed
		l.mu.Unlock()
		if eof {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("%s still open after %v", l.name, timeout)
		}
	}
}

// A Proc is a running helper process (or any command given to Start).
type Proc struct {
	Cmd *exec.Cmd
	// Stdin is a pipe to the process's standard input, unless the command
	// had one set; closing it gives the process EOF.
	Stdin  io.WriteCloser
	Stdout *Lines
	Stderr *Lines
	done   chan struct{}
	err    error
}

// Start starts cmd, collecting its stdout and stderr by line. The process
// is killed when the test ends if it is still running.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	var stdin io.WriteCloser
	if cmd.Stdin == nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	p := &Proc{
		Cmd:    cmd,
		Stdin:  stdin,
		Stdout: newLines("stdout", stdout),
		Stderr: newLines("stderr", stderr),
		done:   make(chan struct{}),
	}
	go func() {
		// Wait for both pipes first: exec.Cmd.Wait closes them.
		_ = p.Stdout.WaitEOF(time.Hour)
		_ = p.Stderr.WaitEOF(time.Hour)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if stdin != nil {
			_ = stdin.Close()
		}
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Signal sends sig to the process.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling the helper: %v", err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code. It fails the test if the process does not exit in time (and kills
// it) or was killed by a signal.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	p.waitDone(t, timeout)
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("waiting for the helper: %v", p.err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("helper %v was killed by %v\nstdout:\n%s\nstderr:\n%s", p.Cmd.Args[1:], ws.Signal(), p.Stdout, p.Stderr)
	}
	return ee.ExitCode()
}

// WaitState waits up to timeout for the process to exit and returns its
// state, however it ended (a signal included). It fails the test if the
// process does not exit in time (and kills it).
func (p *Proc) WaitState(t testing.TB, timeout time.Duration) *os.ProcessState {
	t.Helper()
	p.waitDone(t, timeout)
	if p.Cmd.ProcessState == nil {
		t.Fatalf("waiting for the helper: %v", p.err)
	}
	return p.Cmd.ProcessState
}

// waitDone waits up to timeout for the process to exit, failing the test
// (after killing it) if it does not.
func (p *Proc) waitDone(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
		t.Fatalf("helper %v did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.Cmd.Args[1:], timeout, p.Stdout, p.Stderr)
	}
}
