//go:build linux

package testutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/cnlink/connector"
	"golang.org/x/sys/unix"
)

// netlinkConnector is NETLINK_CONNECTOR (include/uapi/linux/netlink.h).
const netlinkConnector = 11

// RequireConnector skips the test if the kernel has no netlink connector
// (CONFIG_CONNECTOR) or no netlink sockets at all.
func RequireConnector(t testing.TB) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, netlinkConnector)
	switch {
	case err == nil:
		unix.Close(fd)
	case errors.Is(err, unix.EPROTONOSUPPORT):
		t.Skipf("kernel feature missing: the netlink connector (CONFIG_CONNECTOR): socket(AF_NETLINK, NETLINK_CONNECTOR): %v", err)
	case errors.Is(err, unix.EAFNOSUPPORT):
		t.Skipf("kernel feature missing: netlink sockets (CONFIG_NET): socket(AF_NETLINK): %v", err)
	default:
		t.Fatalf("probing for the netlink connector: socket(AF_NETLINK, NETLINK_CONNECTOR): %v", err)
	}
}

// HasCapability reports whether the calling thread has capability c
// (unix.CAP_*) in its effective set.
func HasCapability(c int) (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("capget: %w", err)
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0, nil
}

// RequireCapability skips the test unless the process has capability c
// (unix.CAP_*, named name, e.g. "CAP_NET_ADMIN") in its effective set.
func RequireCapability(t testing.TB, c int, name string) {
	t.Helper()
	ok, err := HasCapability(c)
	if err != nil {
		t.Fatalf("checking for %s: %v", name, err)
	}
	if !ok {
		t.Skipf("privilege missing: this test needs %s in the effective capability set (run it as root)", name)
	}
}

// RequireInitialNetNS skips the test unless the process is in the initial
// network namespace, the only one in which the kernel side of the connector
// exists. It asks the kernel: a message to port 0 is refused (ECONNREFUSED)
// anywhere else.
func RequireInitialNetNS(t testing.TB) {
	t.Helper()
	RequireConnector(t)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, netlinkConnector)
	if err != nil {
		t.Fatalf("probing the network namespace: %v", err)
	}
	defer unix.Close(fd)
	// A cn_msg with an id no kernel agent registers (0xc0ffee:0xc0ffee),
	// which the kernel drops silently in the initial namespace.
	b := make([]byte, 36)
	binary.NativeEndian.PutUint32(b[0:], 36)
	binary.NativeEndian.PutUint16(b[4:], 3) // NLMSG_DONE
	binary.NativeEndian.PutUint32(b[16:], 0xc0ffee)
	binary.NativeEndian.PutUint32(b[20:], 0xc0ffee)
	err = unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	switch {
	case err == nil:
	case errors.Is(err, unix.ECONNREFUSED):
		t.Skipf("kernel feature missing here: not in the initial network namespace, where alone the kernel side of the connector exists (a message to port 0 was refused: %v)", err)
	default:
		t.Fatalf("probing the network namespace: sendto port 0: %v", err)
	}
}

// RequireProcEvents skips the test unless the kernel's process events
// connector (CONFIG_PROC_EVENTS, id 1:1) is registered.
func RequireProcEvents(t testing.TB) {
	t.Helper()
	RequireInitialNetNS(t)
	RequireAgent(t, connector.IDProc, "the process events connector (CONFIG_PROC_EVENTS)")
}

// RequireAgent makes sure a kernel agent is registered with the connector
// for id, as connector.Agents lists them; what names it for the message
// ("the w1 core (module wire)"). Where it is missing the test skips, saying
// so, except inside the kernel matrix, whose packages name the modules they
// need (testdata/kmatrix-modules): there it fails.
func RequireAgent(t testing.TB, id connector.CBID, what string) {
	t.Helper()
	agents, err := connector.Agents()
	if err != nil {
		t.Fatalf("listing the connector's agents: %v (is /proc mounted? in the initial network namespace?)", err)
	}
	for _, a := range agents {
		if a.ID == id {
			return
		}
	}
	msg := fmt.Sprintf("kernel feature missing: %s: no agent registered for id %d:%d (registered: %v)", what, id.Idx, id.Val, agents)
	if InMatrix() {
		t.Fatalf("in the kernel matrix: %s; does the package's testdata/kmatrix-modules load its module?", msg)
	}
	t.Skip(msg)
}

// KernelVersion returns the running kernel's major and minor version, from
// uname(2)'s release ("6.12.118+deb13-amd64" is 6, 12).
func KernelVersion(t testing.TB) (major, minor int) {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("parsing the kernel release %q: %v", rel, err)
	}
	return major, minor
}

// KernelAtLeast reports whether the running kernel is major.minor or newer.
func KernelAtLeast(t testing.TB, major, minor int) bool {
	t.Helper()
	ma, mi := KernelVersion(t)
	return ma > major || ma == major && mi >= minor
}

// NewNetNS creates a new network namespace and returns a file descriptor
// for it, closed when the test ends. The process stays where it is: the
// namespace is created on a locked OS thread that then returns to the
// original namespace (if it cannot, the thread is never unlocked, and the
// runtime ends it). It skips the test if creating network namespaces needs
// a privilege the process lacks (CAP_SYS_ADMIN) or the kernel lacks
// CONFIG_NET_NS.
//
// The thread must return: if it stayed in the new namespace and happened to
// be the process's main thread, /proc/self/net would show the new
// namespace from then on.
func NewNetNS(t testing.TB) int {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		orig, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("opening the current network namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		fd, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("opening the new network namespace: %w", err)
		}
		if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
			// Stay locked: the runtime ends the thread with the goroutine.
			if err == nil {
				unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("returning to the original network namespace: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, err}
	}()
	r := <-ch
	switch {
	case r.err == nil:
	case errors.Is(r.err, unix.EPERM):
		t.Skipf("privilege missing: creating a network namespace needs CAP_SYS_ADMIN: %v", r.err)
	case errors.Is(r.err, unix.EINVAL):
		t.Skipf("kernel feature missing: network namespaces (CONFIG_NET_NS): %v", r.err)
	default:
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

// DropCapabilityThread removes capability c (unix.CAP_*) from the calling
// OS thread's effective, permitted, inheritable and ambient sets, and from
// its bounding set where the thread may change that (CAP_SETPCAP). Linux
// keeps credentials per thread, so the caller must have called
// runtime.LockOSThread and must never unlock the thread, and everything
// that should run without c must run on the same goroutine. Meant for
// helper processes (see Main).
func DropCapabilityThread(c int) error {
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("prctl(PR_CAPBSET_DROP, %d): %w", c, err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_LOWER, uintptr(c), 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("prctl(PR_CAP_AMBIENT_LOWER, %d): %w", c, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	bit := uint32(1) << (uint(c) % 32)
	d := &data[c/32]
	d.Effective &^= bit
	d.Permitted &^= bit
	d.Inheritable &^= bit
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if ok, err := HasCapability(c); err != nil || ok {
		return fmt.Errorf("capability %d still effective after capset (err %v)", c, err)
	}
	return nil
}

// FDCount returns the number of open file descriptors of the process.
func FDCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting open file descriptors: %v (is /proc mounted?)", err)
	}
	return len(ents)
}

// BecomeNobody switches every thread of the process to uid and gid 65534
// with no supplementary groups, which clears every capability: a helper
// process then sees what an unprivileged user sees. It needs root. Go's
// syscall package applies the change to all threads.
func BecomeNobody() error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(65534, 65534, 65534); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	return nil
}

// QueueEmpty reports whether c's receive queue is empty: no memory is
// charged to its receive buffer (SK_MEMINFO_RMEM_ALLOC of getsockopt
// SO_MEMINFO, Linux 3.4 and later), the condition on which netlink ends the
// congestion that follows an overrun (netlink_rcv_wake in
// net/netlink/af_netlink.c). Unlike a peek with recvfrom(MSG_PEEK), it does
// not take a pending ENOBUFS from the socket, whose reader must see it.
func QueueEmpty(t testing.TB, c *connector.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var info [16]uint32 // SK_MEMINFO_VARS is 9 on Linux 4.7 to 7.3; room for more
	size := uint32(len(info) * 4)
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	}); err != nil {
		t.Fatalf("Control: %v", err)
	}
	if errno != 0 {
		t.Fatalf("getsockopt(SO_MEMINFO): %v", errno)
	}
	if size < 4 {
		t.Fatalf("getsockopt(SO_MEMINFO) returned %d bytes", size)
	}
	return info[0] == 0 // SK_MEMINFO_RMEM_ALLOC (include/uapi/linux/sock_diag.h)
}

// QuietGroup returns a userspace multicast group (12 to 32) that no
// connector socket in this network namespace has joined at the moment,
// chosen at random among those, for a test that measures what its own
// multicasts do to a receive buffer: another process's traffic on the
// group would take room in it. Membership is read from /proc/net/netlink
// (the Groups column holds each socket's first 32 groups). A process may
// still send to a group it has not joined, or join after the choice: a
// test that depends on having the group alone joins it with JoinQuietGroup,
// or checks the sender of everything it receives and measures again if
// anything else arrived.
func QuietGroup(t testing.TB) connector.Group {
	t.Helper()
	var joined uint32
	for _, mask := range groupMasks(t) {
		joined |= mask
	}
	var free []connector.Group
	for g := connector.Group(12); g <= 32; g++ {
		if joined&(1<<(g-1)) == 0 {
			free = append(free, g)
		}
	}
	if len(free) == 0 {
		t.Fatalf("every connector group from 12 to 32 has a member (/proc/net/netlink groups %08x): no quiet group for this test", joined)
	}
	return free[rand.IntN(len(free))]
}

// JoinQuietGroup joins c, a socket on the real kernel, to a QuietGroup and
// returns it, once c is that group's only member: two tests that chose the
// same group at the same moment both see the other after joining, leave
// and choose again (10 tries at most).
func JoinQuietGroup(t testing.TB, c *connector.Conn) connector.Group {
	t.Helper()
	for range 10 {
		g := QuietGroup(t)
		if err := c.JoinGroup(g); err != nil {
			t.Fatalf("joining quiet group %d: %v", g, err)
		}
		// The kernel walks its socket table for /proc/net/netlink while
		// sockets come and go, and can pass over some (a table resize): a
		// read that misses this socket's membership is read again.
		others, self := 0, false
		for read := 0; !self; read++ {
			if read == 5 {
				t.Fatalf("port %d joined group %d, but 5 reads of /proc/net/netlink did not show it", c.PortID(), g)
			}
			others = 0
			for port, mask := range groupMasks(t) {
				if mask&(1<<(g-1)) == 0 {
					continue
				}
				if port == c.PortID() {
					self = true
				} else {
					others++
				}
			}
		}
		if others == 0 {
			return g
		}
		if err := c.LeaveGroup(g); err != nil {
			t.Fatalf("leaving group %d: %v", g, err)
		}
	}
	t.Fatal("10 tries: each quiet group chosen had another member by the time it was joined")
	return 0
}

// groupMasks returns the first 32 groups of every connector socket in this
// network namespace, by port id, from /proc/net/netlink.
func groupMasks(t testing.TB) map[uint32]uint32 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/netlink")
	if err != nil {
		t.Fatalf("membership of multicast groups: %v", err)
	}
	masks := map[uint32]uint32{}
	// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] != strconv.Itoa(netlinkConnector) {
			continue
		}
		port, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			t.Fatalf("/proc/net/netlink: Pid %q: %v", f[2], err)
		}
		mask, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil {
			t.Fatalf("/proc/net/netlink: Groups %q: %v", f[3], err)
		}
		masks[uint32(port)] |= uint32(mask)
	}
	return masks
}
