//go:build linux

package main

import (
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// awaitOwnExec runs a process that exits at once and waits until a wait on
// a socket (wait reports that something came) brings its exec, as got
// tells from what came (got reads it). Other programs' events come too:
// the machine is shared. A scenario whose exec does not come within 10 s is
// tried again (an overrun may have dropped it), up to retry's limit.
func awaitOwnExec(t *testing.T, what string, wait func() bool, got func(pid int) bool) {
	t.Helper()
	retry(t, func() error {
		c := helperCmd(t, "exit7")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		_ = c.Wait()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if wait() && got(c.Process.Pid) {
				return nil
			}
		}
		t.Logf("%s did not bring the exec of %d within 10 s", what, c.Process.Pid)
		return errRetry
	})
}

// bellExec is awaitOwnExec's got for the doorbell: the datagram of its last
// wait decodes as the exec of pid.
func bellExec(t *testing.T, b *doorbell) func(pid int) bool {
	return func(pid int) bool {
		var ev proc.Event
		if !b.event(&ev) {
			t.Logf("the doorbell brought something other than an exec: %d bytes, errno %v", b.n, b.errno)
			return false
		}
		return int(ev.TGID) == pid
	}
}

// drainExec is awaitOwnExec's got for the main socket: reading its queue
// to the end, without waiting, finds the exec of pid.
func drainExec(t *testing.T, l *proc.Listener) func(pid int) bool {
	return func(pid int) bool {
		found := false
		var ev proc.Event
		_ = l.Flush()
		for {
			err := l.Next(&ev)
			switch {
			case errors.Is(err, connector.ErrFlushed):
				return found
			case err != nil:
				t.Fatalf("reading the queue after a wait: %v", err)
			case ev.Kind == proc.KindExec && int(ev.TGID) == pid:
				found = true
			}
		}
	}
}

// openTestWait opens procmon's main socket (-kernel-wait, the default) and
// its own wait on it, as procmon does without the doorbell.
func openTestWait(t *testing.T) (*proc.Listener, *sockWait) {
	t.Helper()
	skipUnlessListen(t)
	l, c, err := listen(&options{kernelWait: true, rcvbuf: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	w, err := openWait(rc)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); l.Close() })
	return l, w
}

// TestKernelSockWait: without the doorbell, procmon's raw wait and its idle
// wait on the main socket end when an event is queued, and the events read
// after them include the exec of a process the test ran. A stop ends an
// idle wait at once, and later idle waits do not wait.
func TestKernelSockWait(t *testing.T) {
	l, w := openTestWait(t)
	awaitOwnExec(t, "a raw wait on the main socket", func() bool { return w.wait(bellSlice) }, drainExec(t, l))
	if w.errno != 0 {
		t.Errorf("a raw wait failed: %v", w.errno)
	}
	awaitOwnExec(t, "an idle wait on the main socket", func() bool { return w.idleWait(time.Second) }, drainExec(t, l))
	if w.errno != 0 {
		t.Errorf("an idle wait failed: %v", w.errno)
	}

	drain := drainExec(t, l)
	go func() {
		time.Sleep(50 * time.Millisecond)
		w.stop()
	}()
	t0 := time.Now()
	for w.idleWait(10 * time.Second) {
		// Other programs' events, until the stop ends the wait.
		drain(0)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the stop ended an idle wait after %v", d)
	}
	t0 = time.Now()
	if w.idleWait(10*time.Second) || time.Since(t0) > time.Second {
		t.Errorf("an idle wait after the stop took %v", time.Since(t0))
	}
}

// TestKernelSockWaitClosed: a wait on a closed socket reports an error at
// once (procmon then stops with it) rather than a timeout, which the loop
// would repeat without end: the raw wait and the idle wait alike.
func TestKernelSockWaitClosed(t *testing.T) {
	l, w := openTestWait(t)
	l.Close()
	t0 := time.Now()
	if !w.wait(bellSlice) || w.errno == 0 {
		t.Errorf("a raw wait on a closed socket: ready %v, errno %v; want an error", w.ready, w.errno)
	}
	if !w.idleWait(10*time.Second) || w.errno == 0 {
		t.Errorf("an idle wait on a closed socket: ready %v, errno %v; want an error", w.ready, w.errno)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the waits on a closed socket took %v", d)
	}
}
