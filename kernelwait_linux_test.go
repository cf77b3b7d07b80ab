package connector_test

// Config.KernelWait: the receive contracts (order, senders, the sender
// policy, overrun counting, deadlines, Flush, Close, no leaks; allocations
// in alloc_linux_test.go) hold when receives wait inside recvmmsg, and the socket is
// really off the runtime poller.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

// groupKernelWait is the userspace group of these tests (see the group
// list in conn_linux_integration_test.go).
const groupKernelWait connector.Group = 24

func kwDial(t testing.TB, cfg connector.Config) *connector.Conn {
	t.Helper()
	cfg.KernelWait = true
	return dial(t, &cfg)
}

// kernelWaiters counts the goroutines waiting in the kernel for a datagram
// (a KernelWait receive) whose stack mentions fn.
func kernelWaiters(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[syscall") && strings.Contains(g, "recvWait") && strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

func TestIntegrationKernelWaitExchange(t *testing.T) {
	requirePrivileged(t)
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			rx := kwDial(t, connector.Config{})
			tx := dial(t, nil)
			src := tier.open(t, rx)
			id := testID()
			sizes := []int{0, 100, 4000}
			for i, n := range sizes {
				if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(n, byte(i))}); err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range sizes {
				m, from := nextWith(t, src, withID(id))
				if m.Seq != uint32(i) || string(m.Data) != string(payload(n, byte(i))) {
					t.Fatalf("message %d: seq %d, %d bytes; want seq %d, %d bytes as sent", i, m.Seq, len(m.Data), i, n)
				}
				if from.Port != tx.PortID() || from.Group != 0 {
					t.Errorf("message %d from %v, want port %d unicast", i, from, tx.PortID())
				}
			}
		})
	}
}

func TestIntegrationKernelWaitSenderPolicy(t *testing.T) {
	requirePrivileged(t)
	rx := kwDial(t, connector.Config{Senders: connector.SendersKernelOnly})
	tx := dial(t, nil)
	if err := tx.SendTo(rx.PortID(), connector.Message{ID: testID()}); err != nil {
		t.Fatal(err)
	}
	if err := rx.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	r := rx.NewReader()
	defer r.Release()
	m, from, err := r.Next()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Next = %v from %v, %v; want the userspace message dropped and the deadline", m.ID, from, err)
	}
	if st := rx.Stats(); st.Foreign != 1 {
		t.Errorf("Stats.Foreign = %d, want 1", st.Foreign)
	}
}

func TestIntegrationKernelWaitOverrun(t *testing.T) {
	requirePrivileged(t)
	rx := kwDial(t, connector.Config{Groups: []connector.Group{groupKernelWait}})
	if err := rx.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	tx := dial(t, nil)
	r := rx.NewReader()
	defer r.Release()
	src := readerSource{r}
	id := testID()
	const flood = 256
	for i := range flood {
		if err := tx.Multicast(groupKernelWait, connector.Message{ID: id, Seq: uint32(i), Data: payload(64, 1)}); err != nil {
			t.Fatalf("multicast %d: %v", i, err)
		}
	}
	_, err := nextErr(t, src, id)
	if !errors.Is(err, connector.ErrOverrun) {
		t.Fatalf("first receive after the flood: %v, want ErrOverrun", err)
	}
	got := 0
	for !queueEmpty(t, rx) {
		if m, _ := nextWith(t, src, withID(id)); m.Seq != uint32(got) {
			t.Fatalf("after the overrun got seq %d, want %d", m.Seq, got)
		}
		got++
	}
	if got == 0 || got >= flood {
		t.Errorf("%d of %d flooded messages were queued; want some but not all", got, flood)
	}
	if st := rx.Stats(); st.Overruns != 1 {
		t.Errorf("Stats.Overruns = %d, want 1", st.Overruns)
	}
}

func TestIntegrationKernelWaitDeadline(t *testing.T) {
	testutil.RequireConnector(t)
	c := kwDial(t, connector.Config{})
	r := c.NewReader()
	defer r.Release()
	slice := rcvTimeout(t, c)
	// A deadline nearer than the 10 ms wait slice is waited for in poll(2),
	// a farther one in recvmmsg slices.
	for _, wait := range []time.Duration{-time.Second, 3 * time.Millisecond, 150 * time.Millisecond} {
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _, err := r.Next()
		took := time.Since(start)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Next with a deadline %v away: %v, want os.ErrDeadlineExceeded", wait, err)
		}
		if took < wait || took > max(wait, 0)+promptly {
			t.Errorf("Next with a deadline %v away returned after %v", wait, took)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("the deadline error %v does not report Timeout", err)
		}
	}
	// Deadlines cost no system call of their own: the socket's receive
	// timeout is still the 10 ms slice it was given at Dial.
	if got := rcvTimeout(t, c); got != slice {
		t.Errorf("SO_RCVTIMEO after waits with deadlines = %v, want %v, the slice set at Dial, untouched", got, slice)
	}
}

// TestIntegrationKernelWaitShortDeadline checks that a receive whose
// deadline is nearer than the wait slice (the poll(2) path) still returns
// the messages that are queued or arrive in time.
func TestIntegrationKernelWaitShortDeadline(t *testing.T) {
	requirePrivileged(t)
	rx := kwDial(t, connector.Config{})
	tx := dial(t, nil)
	r := rx.NewReader()
	defer r.Release()
	slice := rcvTimeout(t, rx)
	id := testID()
	for i := range 20 {
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i)}); err != nil {
			t.Fatal(err)
		}
		if err := rx.SetReadDeadline(time.Now().Add(5 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		m, _, err := r.Next()
		if err != nil || m.ID != id || m.Seq != uint32(i) {
			t.Fatalf("Next with a message queued and a 5ms deadline: %v seq %d, %v; want %v seq %d", m.ID, m.Seq, err, id, i)
		}
	}
	if got := rcvTimeout(t, rx); got != slice {
		t.Errorf("SO_RCVTIMEO after 20 receives with deadlines = %v, want %v, the slice set at Dial, untouched", got, slice)
	}
}

// rcvTimeout reads the socket's SO_RCVTIMEO (as the kernel keeps it: in
// ticks, so 10 ms reads back as 12 ms at HZ=250).
func rcvTimeout(t *testing.T, c *connector.Conn) time.Duration {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var tv *unix.Timeval
	var gerr error
	if err := rc.Control(func(fd uintptr) { tv, gerr = unix.GetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return time.Duration(tv.Nano())
}

func TestIntegrationKernelWaitFlush(t *testing.T) {
	testutil.RequireConnector(t)
	c, err := connector.Dial(&connector.Config{KernelWait: true}) // no deadline
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := c.NewReader()
	defer r.Release()
	done := make(chan error, 1)
	go func() { _, _, err := r.Next(); done <- err }()
	if !testutil.WaitFor(waitTimeout, func() bool { return kernelWaiters("TestIntegrationKernelWaitFlush") >= 1 }) {
		t.Fatal("the reader did not block in the kernel")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	awaitErr(t, done, promptly, connector.ErrFlushed, "Next woken by Flush")
}

func TestIntegrationKernelWaitClose(t *testing.T) {
	testutil.RequireConnector(t)
	warm, err := connector.Dial(&connector.Config{KernelWait: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = warm.Close()
	fds := testutil.FDCount(t)
	testutil.CheckGoroutines(t, promptly)

	c, err := connector.Dial(&connector.Config{KernelWait: true}) // no deadline
	if err != nil {
		t.Fatal(err)
	}
	r := c.NewReader()
	done := make(chan error, 2)
	go func() { _, _, err := r.Next(); done <- err }()
	go func() { _, _, err := c.Receive(); done <- err }()
	if !testutil.WaitFor(waitTimeout, func() bool { return kernelWaiters("TestIntegrationKernelWaitClose") >= 2 }) {
		t.Fatal("the readers did not block in the kernel")
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	timeout := time.After(promptly)
	for range 2 {
		select {
		case err := <-done:
			errorsIsAll(t, err, connector.ErrClosed, os.ErrClosed, net.ErrClosed)
		case <-timeout:
			t.Fatalf("a blocked reader was still blocked %v after Close", promptly)
		}
	}
	t.Logf("Close and both readers returned in %v", time.Since(start))
	for name, call := range map[string]func() error{
		"Reader.Next": func() error { _, _, err := r.Next(); return err },
		"Receive":     func() error { _, _, err := c.Receive(); return err },
		"JoinGroup":   func() error { return c.JoinGroup(groupKernelWait) },
		"SyscallConn": func() error { _, err := c.SyscallConn(); return err },
		"Close":       func() error { return c.Close() },
	} {
		if err := call(); !errors.Is(err, connector.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	r.Release()
	if got := testutil.FDCount(t); got != fds {
		t.Errorf("open file descriptors: %d before Dial, %d after Close", fds, got)
	}
}

// TestIntegrationKernelWaitOffPoller checks that the socket is in no epoll
// set of the process (the runtime poller's included): with it in one, every
// datagram would also wake the poller's thread.
func TestIntegrationKernelWaitOffPoller(t *testing.T) {
	testutil.RequireConnector(t)
	for _, kw := range []bool{false, true} {
		c := dial(t, &connector.Config{KernelWait: kw})
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var fd int
		if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
			t.Fatal(err)
		}
		watched := epollWatched(t)
		if kw && watched[fd] {
			t.Errorf("KernelWait: the socket (fd %d) is watched by an epoll instance", fd)
		}
		if !kw && !watched[fd] {
			// The check must be able to fail: the poller path's socket is
			// registered.
			t.Errorf("poller mode: the socket (fd %d) is in no epoll set; the check sees nothing", fd)
		}
	}
}

// epollWatched returns the descriptors that the process's epoll instances
// watch (the "tfd:" lines of their /proc/self/fdinfo entries).
func epollWatched(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	w := map[int]bool{}
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || l != "anon_inode:[eventpoll]" {
			continue
		}
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "tfd:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					w[n] = true
				}
			}
		}
	}
	if len(w) == 0 {
		t.Fatal("no epoll instance watches anything: the runtime poller should")
	}
	return w
}

// TestIntegrationKernelWaitSend checks the sends of a KernelWait Conn, which
// wait in the kernel for room in a full unicast receiver: every message
// arrives once the receiver reads, a write deadline ends the wait, and so
// does Close. Small payloads are built on the stack (sendStack), larger
// ones in a pooled buffer: both are checked.
func TestIntegrationKernelWaitSend(t *testing.T) {
	requirePrivileged(t)
	for _, size := range []int{16, 512} {
		t.Run(fmt.Sprintf("payload=%dB", size), func(t *testing.T) { kernelWaitSend(t, size) })
	}
}

func kernelWaitSend(t *testing.T, size int) {
	rx := dial(t, nil)
	if err := rx.SetReadBuffer(1); err != nil { // the kernel's minimum
		t.Fatal(err)
	}
	tx, err := connector.Dial(&connector.Config{KernelWait: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	id := testID()

	// Back-pressure: far more than the receive buffer holds, all delivered.
	const n = 200
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(size, 0)}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	r := rx.NewReader()
	defer r.Release()
	src := readerSource{r}
	for i := range n {
		if m, _ := nextWith(t, src, withID(id)); m.Seq != uint32(i) {
			t.Fatalf("got seq %d, want %d", m.Seq, i)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("SendTo: %v", err)
	}

	// A write deadline ends a wait for room.
	if err := tx.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var derr error
	for i := 0; derr == nil; i++ {
		derr = tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(size, 0)})
	}
	if !errors.Is(derr, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTo to a full receiver past the write deadline: %v, want os.ErrDeadlineExceeded", derr)
	}
	if err := tx.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// Close ends a wait for room.
	closeUnblocksSend(t, tx, rx, size, "(*fdConn).sendto")
}
