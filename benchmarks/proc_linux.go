//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A child is a process the suite started: a contestant, a storm or a unicast
// peer, a re-executed copy of this binary or one of the C programs. Every child is registered
// until it has been waited for, so that killAll can stop whatever is left.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *limitedBuffer
	waited chan struct{}
	err    error
}

var (
	childrenMu sync.Mutex
	children   = map[*child]bool{}
)

// modeEnv selects what a re-executed copy of the binary does.
const modeEnv = "CNBENCH_MODE"

// spawn starts this binary again as a child called name (for messages),
// which names itself after role (see nameSelf).
func spawn(name, role string, env []string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return spawnExe(exe, name, role, env, args...)
}

// spawnExe starts the program exe as a child, as spawn does.
func spawnExe(exe, name, role string, env []string, args ...string) (*child, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, roleEnv+"="+commName(role))
	// Children die with the suite even if it is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16), stderr: &limitedBuffer{max: 8 << 10}, waited: make(chan struct{})}
	cmd.Stderr = c.stderr
	childrenMu.Lock()
	defer childrenMu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	children[c] = true
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		childrenMu.Lock()
		delete(children, c)
		childrenMu.Unlock()
		close(c.waited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// line waits for the next output line that starts with prefix and returns the
// rest of it.
func (c *child) line(prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.waited
				return "", fmt.Errorf("%s exited (%v) before printing %q: %s", c.name, c.err, prefix, strings.TrimSpace(c.stderr.String()))
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return strings.TrimSpace(rest), nil
			}
		case <-t.C:
			return "", fmt.Errorf("%s printed no %q within %v: %s", c.name, prefix, timeout, strings.TrimSpace(c.stderr.String()))
		}
	}
}

func (c *child) send(line string) error {
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

func (c *child) signal(sig syscall.Signal) error { return syscall.Kill(c.pid(), sig) }

// finish closes the child's stdin and waits for it to exit, killing it if it
// has not within the grace period.
func (c *child) finish(grace time.Duration) {
	_ = c.stdin.Close()
	select {
	case <-c.waited:
		return
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	<-c.waited
}

// killAll kills every child still running, one by one by pid.
func killAll() {
	childrenMu.Lock()
	var cs []*child
	for c := range children {
		cs = append(cs, c)
	}
	childrenMu.Unlock()
	for _, c := range cs {
		_ = c.cmd.Process.Kill()
	}
	for _, c := range cs {
		select {
		case <-c.waited:
		case <-time.After(5 * time.Second):
		}
	}
}

// roleEnv carries a child's command name.
const roleEnv = "CNBENCH_ROLE"

// commName turns a role into a command name: "cn-" and the role, in the
// kernel's 15 characters.
func commName(role string) string {
	name := "cn-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return -1
	}, strings.ToLower(role))
	return name[:min(len(name), 15)]
}

// nameSelf gives every thread of this process the command name in roleEnv,
// so that ps, top and perf tell the suite's processes apart. Threads started
// later inherit the name from the thread that starts them.
func nameSelf() {
	name := os.Getenv(roleEnv)
	if name == "" {
		return
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, e := range ents {
		_ = os.WriteFile(filepath.Join("/proc/self/task", e.Name(), "comm"), []byte(name), 0)
	}
}

type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
