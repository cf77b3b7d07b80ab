//go:build linux

// Package smoke is a throwaway test package for the kernel matrix runner: it
// talks to the proc connector directly, without the library, so that the
// runner can be checked on every kernel before the library's own tests exist.
//
//	.ci/matrix -pkgs ./internal/kmatrix/testdata/smoke
package smoke

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	cnIdxProc   = 1
	cnValProc   = 1
	mcastListen = 1
	mcastIgnore = 2

	procEventNone = 0x00000000
	procEventFork = 0x00000001
	procEventExit = 0x80000000
	procEventAll  = 0xE00003C7

	// Datagram offsets: nlmsghdr (16) + cn_msg (20) + proc_event.
	offAck      = 16 + 12
	offWhat     = 36
	offData     = 36 + 16
	minEventLen = 36 + 40
)

// helperEnv makes the test binary exit with status 3 at once; the tests run
// it as a child to get FORK and EXIT events.
const helperEnv = "KMATRIX_SMOKE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(3)
	}
	os.Exit(m.Run())
}

type conn struct {
	t        *testing.T
	fd       int
	overruns int // receive overruns seen (ENOBUFS)
}

func dial(t *testing.T) *conn {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// A large receive buffer (8 MiB, where CAP_NET_ADMIN allows forcing
	// it; else the default) makes receive overruns from other programs'
	// process events rarer; the waits below survive them anyway.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (cnIdxProc - 1)}); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("bind to group 1: %v (needs CAP_NET_ADMIN before 6.6)", err)
		}
		t.Fatalf("bind: %v", err)
	}
	return &conn{t: t, fd: fd}
}

// send sends a proc connector request with the given cn_msg ack and payload.
func (c *conn) send(ack uint32, payload ...uint32) {
	c.t.Helper()
	b := make([]byte, 36+4*len(payload))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	ne.PutUint32(b[8:], ack) // nlmsg seq
	ne.PutUint32(b[16:], cnIdxProc)
	ne.PutUint32(b[20:], cnValProc)
	ne.PutUint32(b[24:], ack) // cn_msg seq
	ne.PutUint32(b[28:], ack)
	ne.PutUint16(b[32:], uint16(4*len(payload)))
	for i, v := range payload {
		ne.PutUint32(b[36+4*i:], v)
	}
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		if errors.Is(err, unix.ECONNREFUSED) {
			c.t.Skipf("send to the kernel: %v (not in the initial network namespace)", err)
		}
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next proc event datagram from the kernel, or nil once the
// deadline has passed. overrun is set instead when the receive reported
// ENOBUFS: the kernel dropped datagrams for this socket, perhaps the one
// waited for, and drops every new one until the queue has been read empty
// (netlink_overrun, netlink_rcv_wake in net/netlink/af_netlink.c). Other
// programs' process events on group 1 can cause it at any time.
func (c *conn) next(deadline time.Time) (b []byte, overrun bool) {
	c.t.Helper()
	buf := make([]byte, 8192)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, false
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			c.t.Fatalf("SO_RCVTIMEO: %v", err)
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		switch {
		case errors.Is(err, unix.ENOBUFS):
			c.overruns++
			return nil, true
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			c.t.Fatalf("recvfrom: %v", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		if n < minEventLen {
			continue
		}
		return buf[:n], false
	}
}

// drain reads the socket's queue empty, so that the kernel queues new
// datagrams again after an overrun, and calls f on each datagram from the
// kernel until f returns true; it reports whether one did.
func (c *conn) drain(f func([]byte) bool) bool {
	c.t.Helper()
	buf := make([]byte, 8192)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false
		case errors.Is(err, unix.ENOBUFS):
			c.overruns++
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			c.t.Fatalf("recvfrom: %v", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); ok && sa.Pid == 0 && n >= minEventLen && f(buf[:n]) {
			return true
		}
	}
}

// Subscribing survives overruns: after one, the queue is read empty and the
// request sent again under the next ack, each try waiting retryWait, for
// listenBudget in all. The kernel queues the acknowledgement within the
// request's own sendmsg, so a try that saw no overrun and no acknowledgement
// within its wait was not acknowledged.
const (
	retryWait    = 2 * time.Second
	listenBudget = 20 * time.Second
)

// subscribe sends the request op (with payload after it) under ack, ack+1,
// ... until the kernel acknowledges one of them (a PROC_EVENT_NONE event
// whose cn_msg.ack is the request's plus one), and returns the
// acknowledgement's error field. The first try waits within; ok is false if
// a try without an overrun got no acknowledgement, or the budget ran out.
// Each request sent is undone with undo (IGNORE) when the test ends.
func (c *conn) subscribe(ack uint32, within time.Duration, undo []uint32, payload ...uint32) (errno uint32, ok bool) {
	c.t.Helper()
	ne := binary.NativeEndian
	first := ack
	ours := func(b []byte) bool {
		if ne.Uint32(b[offWhat:]) != procEventNone {
			return false
		}
		a := ne.Uint32(b[offAck:]) - 1
		if a-first > ack-first { // not one of ours: first <= a <= ack
			return false
		}
		errno = ne.Uint32(b[offData:])
		return true
	}
	budget := time.Now().Add(listenBudget)
	for ; ; ack++ {
		c.send(ack, payload...)
		undoAck := ack + 0x100
		c.t.Cleanup(func() { c.send(undoAck, undo...) })
		deadline := time.Now().Add(within)
		if ack != first {
			deadline = time.Now().Add(min(retryWait, time.Until(budget)))
		}
		overrun := false
		for !overrun {
			b, ov := c.next(deadline)
			if b == nil && !ov {
				return 0, false
			}
			if ov {
				overrun = true
				c.t.Logf("receive overrun while waiting for the acknowledgement of request %#x: reading the queue empty and asking again", ack)
				if c.drain(ours) {
					return errno, true
				}
			} else if ours(b) {
				return errno, true
			}
		}
		if time.Now().After(budget) {
			return 0, false
		}
	}
}

func release(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	r := unix.ByteSliceToString(u.Release[:])
	t.Logf("kernel %s (KMATRIX_KERNEL=%q)", r, os.Getenv("KMATRIX_KERNEL"))
	return r
}

// listen subscribes with the classic 4-byte request and undoes it at the end
// (before 6.6 the listener count is global and closing does not lower it).
func listen(t *testing.T, c *conn, ack uint32) {
	t.Helper()
	errno, ok := c.subscribe(ack, 5*time.Second, []uint32{mcastIgnore}, mcastListen)
	if !ok {
		t.Fatal("no ack for the 4-byte PROC_CN_MCAST_LISTEN within 5s (or, after receive overruns, within 20s)")
	}
	if errno != 0 {
		t.Fatalf("LISTEN ack carries error %d", errno)
	}
}

func TestListenAck(t *testing.T) {
	release(t)
	c := dial(t)
	listen(t, c, 0x4b4d0001)
}

// TestListenAckAfterOverrun: a LISTEN whose acknowledgement the kernel
// drops because the socket's queue is full (here: filled by unicasts from a
// second socket, which needs CAP_NET_ADMIN) is asked again once the queue
// has been read empty, and acknowledged.
func TestListenAckAfterOverrun(t *testing.T) {
	c := dial(t)
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil { // the minimum
		t.Fatal(err)
	}
	local, err := unix.Getsockname(c.fd)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	// Fillers of the acknowledgement's size (a struct proc_event) take the
	// same room: once the next filler does not fit, neither does the
	// acknowledgement, whichever way the kernel checks room.
	filler := make([]byte, minEventLen)
	binary.NativeEndian.PutUint32(filler[0:], uint32(len(filler)))
	binary.NativeEndian.PutUint16(filler[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(filler[16:], 0x7e57) // an id no kernel user has
	binary.NativeEndian.PutUint16(filler[32:], minEventLen-36)
	to := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: local.(*unix.SockaddrNetlink).Pid}
	for n := 0; ; n++ {
		err := unix.Sendto(tx, filler, unix.MSG_DONTWAIT, to)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if errors.Is(err, unix.EPERM) {
			t.Skipf("unicast to another socket: %v (needs CAP_NET_ADMIN)", err)
		}
		if err != nil || n > 10000 {
			t.Fatalf("filling the receive queue: %d sent, then %v", n, err)
		}
	}
	listen(t, c, 0x4b4d0101)
	if c.overruns == 0 {
		t.Error("the LISTEN was acknowledged without a receive overrun: the queue was not full")
	}
}

func TestForkExitEvents(t *testing.T) {
	c := dial(t)
	listen(t, c, 0x4b4d0201)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A receive overrun (other programs' events on group 1) may drop the
	// helper's events: the queue is then read empty and a new helper run,
	// 5 times at most.
	for try := 1; ; try++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Read while the helper runs: the sooner the queue is read, the
		// less room other programs' events take.
		ok := forkExit(t, c, uint32(cmd.Process.Pid))
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("helper: got %v, want exit status 3", err)
		}
		if ok {
			return
		}
		if try == 5 {
			t.Fatalf("%d helpers' events were each met by a receive overrun", try)
		}
		c.drain(func([]byte) bool { return false })
	}
}

// forkExit waits for the EXIT event of pid, checks its exit code and that
// its FORK came first, and reports true; it reports false after a receive
// overrun before the EXIT.
func forkExit(t *testing.T, c *conn, pid uint32) bool {
	t.Helper()
	ne := binary.NativeEndian
	deadline := time.Now().Add(5 * time.Second)
	var sawFork bool
	for {
		b, overrun := c.next(deadline)
		if overrun {
			t.Logf("receive overrun while waiting for the events of helper pid %d (fork seen: %v)", pid, sawFork)
			return false
		}
		if b == nil {
			t.Fatalf("no EXIT event for helper pid %d within 5s (fork seen: %v)", pid, sawFork)
		}
		switch ne.Uint32(b[offWhat:]) {
		case procEventFork:
			sawFork = sawFork || ne.Uint32(b[offData+8:]) == pid
		case procEventExit:
			if ne.Uint32(b[offData:]) != pid {
				continue
			}
			if code := ne.Uint32(b[offData+8:]); code != 0x300 {
				t.Errorf("EXIT exit_code = %#x, want 0x300", code)
			}
			if !sawFork {
				t.Errorf("EXIT for pid %d without a FORK event before it", pid)
			}
			return true
		}
	}
}

// TestProcInputFilter sends the 8-byte struct proc_input form of LISTEN
// (6.6+). Asking for every event type keeps the ack visible to the socket.
// Kernels before 6.6 drop such a request silently, which makes the test skip;
// from 6.6 on, a missing ack fails it.
func TestProcInputFilter(t *testing.T) {
	rel := release(t)
	c := dial(t)
	const ack = 0x4b4d0301
	errno, ok := c.subscribe(ack, 2*time.Second, []uint32{mcastIgnore, 0}, mcastListen, procEventAll)
	if !ok {
		var major, minor int
		if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err == nil && (major > 6 || major == 6 && minor >= 6) {
			t.Fatalf("kernel %s did not ack the 8-byte proc_input LISTEN within 2s", rel)
		}
		t.Skipf("kernel %s did not ack the 8-byte proc_input LISTEN within 2s (per-socket filters arrived in 6.6)", rel)
	}
	if errno != 0 {
		t.Fatalf("8-byte LISTEN ack carries error %d", errno)
	}
	t.Logf("kernel %s acked the 8-byte proc_input LISTEN", rel)
}

// TestModuleLoaded checks the matrix's module loading: testdata/kmatrix-modules
// names wire, the w1 core, which registers the connector callback 3:1 when
// it loads (drivers/w1/w1_netlink.c). Outside the matrix it skips.
func TestModuleLoaded(t *testing.T) {
	if os.Getenv("KMATRIX") == "" {
		t.Skip("runs only in the kernel matrix, which loads the wire module (testdata/kmatrix-modules)")
	}
	b, err := os.ReadFile("/proc/net/connector")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "w1" && f[1] == "3:1" {
			found = true
		}
	}
	if !found {
		t.Fatalf("/proc/net/connector lists no w1 3:1 after the wire module was loaded:\n%s", b)
	}
	if _, err := os.Stat("/sys/module/wire"); err != nil {
		t.Errorf("wire is not in /sys/module: %v", err)
	}
	t.Logf("%s: /proc/net/connector:\n%s", release(t), b)
}
