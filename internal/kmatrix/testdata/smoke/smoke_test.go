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
	t  *testing.T
	fd int
}

func dial(t *testing.T) *conn {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (cnIdxProc - 1)}); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("bind to group 1: %v (needs CAP_NET_ADMIN before 6.6)", err)
		}
		t.Fatalf("bind: %v", err)
	}
	return &conn{t, fd}
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
// deadline has passed.
func (c *conn) next(deadline time.Time) []byte {
	c.t.Helper()
	buf := make([]byte, 8192)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			c.t.Fatalf("SO_RCVTIMEO: %v", err)
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		switch {
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
		return buf[:n]
	}
}

// waitAck waits for the PROC_EVENT_NONE answer to a request sent with ack
// and returns its error field.
func (c *conn) waitAck(ack uint32, within time.Duration) (errno uint32, ok bool) {
	deadline := time.Now().Add(within)
	ne := binary.NativeEndian
	for {
		b := c.next(deadline)
		if b == nil {
			return 0, false
		}
		if ne.Uint32(b[offWhat:]) == procEventNone && ne.Uint32(b[offAck:]) == ack+1 {
			return ne.Uint32(b[offData:]), true
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
	c.send(ack, mcastListen)
	errno, ok := c.waitAck(ack, 5*time.Second)
	if !ok {
		t.Fatal("no ack for the 4-byte PROC_CN_MCAST_LISTEN within 5s")
	}
	if errno != 0 {
		t.Fatalf("LISTEN ack carries error %d", errno)
	}
	t.Cleanup(func() { c.send(ack+100, mcastIgnore) })
}

func TestListenAck(t *testing.T) {
	release(t)
	c := dial(t)
	listen(t, c, 0x4b4d0001)
}

func TestForkExitEvents(t *testing.T) {
	c := dial(t)
	listen(t, c, 0x4b4d0201)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("helper: got %v, want exit status 3", err)
	}
	pid := uint32(cmd.Process.Pid)
	ne := binary.NativeEndian
	deadline := time.Now().Add(5 * time.Second)
	var sawFork bool
	for {
		b := c.next(deadline)
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
			return
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
	c.send(ack, mcastListen, procEventAll)
	errno, ok := c.waitAck(ack, 2*time.Second)
	if !ok {
		var major, minor int
		if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err == nil && (major > 6 || major == 6 && minor >= 6) {
			t.Fatalf("kernel %s did not ack the 8-byte proc_input LISTEN within 2s", rel)
		}
		t.Skipf("kernel %s did not ack the 8-byte proc_input LISTEN within 2s (per-socket filters arrived in 6.6)", rel)
	}
	t.Cleanup(func() { c.send(ack+100, mcastIgnore, 0) })
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
