//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
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

// openTestBell opens the doorbell as procmon does (with its BPF filter on
// any kernel when filter is set), and closes it when the test ends.
func openTestBell(t *testing.T, filter bool) *doorbell {
	t.Helper()
	skipUnlessListen(t)
	b := openBell(&options{kernelWait: true, bellFilter: filter})
	if b == nil {
		t.Fatalf("the doorbell (BPF filter %v) did not open", filter)
	}
	t.Cleanup(b.Close)
	// The socket joined group 1 before its filter was set (the kernel's
	// at subscription, or SetBPF): what other processes did in between is
	// queued unfiltered. Read it off, so that a wait brings only what came
	// after the filter.
	for range 1 << 16 {
		if b.poll(0); b.errno == unix.EAGAIN {
			return b
		}
		if b.errno == unix.EBADF {
			t.Fatal("the doorbell closed while it was read empty")
		}
	}
	t.Fatal("the doorbell was not read empty after 65536 datagrams")
	return b
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

// TestExecFilter runs the doorbell's BPF socket filter (the one it uses
// before Linux 6.6) on datagrams laid out as the kernel sends them: it
// accepts an exec of the process events connector, whole, and drops a
// fork, an exit, an acknowledgement, an exec with another connector id and
// a datagram too short to hold the event.
func TestExecFilter(t *testing.T) {
	ins, ok := bpf.Disassemble(execFilter)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	datagram := func(idx, val, what uint32) []byte {
		const nlmsgHdrLen, cnMsgLen, eventLen = 16, 20, 40
		b := make([]byte, nlmsgHdrLen+cnMsgLen+eventLen)
		ne := binary.NativeEndian
		ne.PutUint32(b[0:], uint32(len(b)))  // nlmsg_len
		ne.PutUint16(b[4:], unix.NLMSG_DONE) // nlmsg_type
		ne.PutUint32(b[16:], idx)
		ne.PutUint32(b[20:], val)
		ne.PutUint16(b[32:], eventLen)
		ne.PutUint32(b[36:], what)
		return b
	}
	const (
		procEventNone = 0x00000000 // acknowledgement
		procEventFork = 0x00000001
		procEventExit = 0x80000000
	)
	for _, c := range []struct {
		name string
		b    []byte
		keep bool
	}{
		{"exec", datagram(1, 1, procEventExec), true},
		{"fork", datagram(1, 1, procEventFork), false},
		{"exit", datagram(1, 1, procEventExit), false},
		{"ack", datagram(1, 1, procEventNone), false},
		{"exec of another idx", datagram(3, 1, procEventExec), false},
		{"exec of another val", datagram(1, 2, procEventExec), false},
		{"short", datagram(1, 1, procEventExec)[:38], false},
	} {
		n, err := vm.Run(c.b)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// The kernel keeps min(the result, the datagram's length)
		// bytes, the result an unsigned 32-bit value (Run's int is 32
		// bits on 386).
		res := uint32(n)
		if keep := res >= uint32(len(c.b)); keep != c.keep || res != 0 && !keep {
			t.Errorf("%s: the filter keeps %d of %d bytes; want all %v, else none", c.name, res, len(c.b), c.keep)
		}
	}
}

// TestKernelDoorbellFilter: the doorbell with its BPF socket filter (as
// before Linux 6.6; -doorbell=bpf on newer kernels) brings the exec of a
// process the test ran, and nothing but execs: the forks and exits of that
// process and of every other on the machine are dropped by the filter.
func TestKernelDoorbellFilter(t *testing.T) {
	b := openTestBell(t, true)
	awaitOwnExec(t, "a wait on the filtered doorbell", b.wait, func(pid int) bool {
		var ev proc.Event
		if !b.event(&ev) {
			if b.errno == unix.ENOBUFS {
				t.Log("the doorbell overflowed")
				return false
			}
			t.Fatalf("the filtered doorbell brought something other than an exec: %d bytes, errno %v", b.n, b.errno)
		}
		return int(ev.TGID) == pid
	})
}
