//go:build linux

package connector

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cnlink/connector/internal/transport"
	"golang.org/x/sys/unix"
)

// Config.KernelWait: blocking receives wait for datagrams inside recvmmsg,
// as a C program does, instead of in the Go runtime poller.
//
// The socket must then be off the poller altogether: the poller's epoll
// instance would otherwise be woken by every datagram as well (an
// epoll_pwait return on another thread per wake-up), which costs more than
// the round trip it replaces (benchmarks/README.md, "Where the time goes").
// So the socket is opened through mdlayher/netlink as usual (bind, groups,
// network namespace), then leavePoller duplicates its descriptor and closes
// the netlink.Conn: the runtime removes the original descriptor from its
// epoll set (EPOLL_CTL_DEL) before closing it, and the socket lives on
// through the duplicate, which an fdConn serves in place of the os.File's
// syscall.RawConn.

// kernelWaitSlice bounds one wait in the kernel (SO_RCVTIMEO): Close, Flush
// and a changed read deadline take effect within a slice, which the kernel
// rounds up to whole clock ticks (12 ms at CONFIG_HZ=250), plus a wake-up.
const kernelWaitSlice = 10 * time.Millisecond

// leavePoller moves t onto a duplicate of its descriptor that the runtime
// poller does not watch. On error the socket is closed.
func (t *sockTransport) leavePoller(raw bool) error {
	var fd int
	err := t.control(func(s int) error {
		var err error
		fd, err = unix.FcntlInt(uintptr(s), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("fcntl", err)
		}
		if err := setSlice(fd); err != nil {
			_ = unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		_ = t.nc.Close()
		return err
	}
	if err := t.nc.Close(); err != nil {
		_ = unix.Close(fd)
		return syscallError(err)
	}
	t.kw = &fdConn{fd: fd, raw: raw}
	t.nc, t.rc = nil, t.kw
	return nil
}

// fdConn is a syscall.RawConn for a descriptor that the runtime poller does
// not watch. Every use holds the read lock, so that close cannot close the
// descriptor (and free its number for reuse) under a call in progress; a
// receive waiting in the kernel holds it for at most a slice.
type fdConn struct {
	mu      sync.RWMutex
	fd      int // -1 once closed
	closing atomic.Bool
	// rdl is the read deadline in unix nanoseconds (0: none).
	rdl atomic.Int64
	// raw is Config.RawWait: waits may be raw system calls (waitOnce).
	raw bool
	// waits counts this descriptor's waits, to refresh rawLimit now and
	// then.
	waits atomic.Uint32
}

// Raw waits (Config.RawWait): a wait in a raw system call keeps its
// goroutine's P, so at most GOMAXPROCS-1 of them may be in progress in the
// process at once, leaving a P for every other goroutine. rawWaiters counts
// them; rawLimit caches GOMAXPROCS-1 (runtime.GOMAXPROCS takes the
// scheduler's lock), read again at a descriptor's first wait and every
// rawRefresh waits after it, so that a new Conn never waits on a value
// cached under another GOMAXPROCS (package init, before a program set its
// own; another Conn's), and a change of GOMAXPROCS takes effect within
// rawRefresh waits, at most rawRefresh slices.
var (
	rawWaiters atomic.Int32
	rawLimit   atomic.Int32
)

const rawRefresh = 16

func init() { rawLimit.Store(int32(runtime.GOMAXPROCS(0) - 1)) }

// waitOnce is one wait of at most a slice (m.RecvWait): a raw one when
// Config.RawWait is set and the process has a P to spare for it, an
// ordinary one otherwise. It reports whether m holds a result.
func (c *fdConn) waitOnce(m *transport.Mmsg, fd int) bool {
	if !c.raw {
		return m.RecvWait(uintptr(fd), false)
	}
	if c.waits.Add(1)%rawRefresh == 1 {
		rawLimit.Store(int32(runtime.GOMAXPROCS(0) - 1))
	}
	if rawWaiters.Add(1) > rawLimit.Load() {
		rawWaiters.Add(-1)
		return m.RecvWait(uintptr(fd), false)
	}
	ok := m.RecvWait(uintptr(fd), true)
	rawWaiters.Add(-1)
	return ok
}

func (c *fdConn) Control(f func(fd uintptr)) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return os.ErrClosed
	}
	f(uintptr(c.fd))
	return nil
}

// Read and Write call f until it reports done, waiting in poll(2) for at
// most a slice between calls. They serve sends and SyscallConn users; the
// receive path waits in recvmmsg itself (recvWait).
func (c *fdConn) Read(f func(fd uintptr) bool) error  { return c.loop(f, unix.POLLIN) }
func (c *fdConn) Write(f func(fd uintptr) bool) error { return c.loop(f, unix.POLLOUT) }

func (c *fdConn) loop(f func(fd uintptr) bool, events int16) error {
	for {
		if done, err := c.once(f, events); done || err != nil {
			return err
		}
	}
}

func (c *fdConn) once(f func(fd uintptr) bool, events int16) (bool, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 || c.closing.Load() {
		return false, os.ErrClosed
	}
	if f(uintptr(c.fd)) {
		return true, nil
	}
	pfd := [1]unix.PollFd{{Fd: int32(c.fd), Events: events}}
	if _, err := unix.Poll(pfd[:], int(kernelWaitSlice/time.Millisecond)); err != nil && err != unix.EINTR {
		return false, err
	}
	return false, nil
}

// sendto sends p under the read lock and returns a bare errno. A unicast to
// a userspace socket (port != 0) is first tried without waiting
// (MSG_DONTWAIT), as a raw system call: it cannot sleep, so the Go runtime
// need not hand this goroutine's processor to another thread around it
// (entersyscall and exitsyscall cost as much user time as the rest of a
// send). Only if the receiver's queue is full (EAGAIN) is it sent again as
// a blocking sendto, which waits for room for at most the SO_SNDTIMEO slice
// set at Dial (then EAGAIN). Sends to the kernel and multicasts run the
// kernel agent's callback in this thread, which may sleep: they are always
// ordinary blocking system calls.
func (c *fdConn) sendto(p []byte, port, groups uint32) error {
	sa := unix.RawSockaddrNetlink{Family: unix.AF_NETLINK, Pid: port, Groups: groups}
	c.mu.RLock()
	if c.fd < 0 || c.closing.Load() {
		c.mu.RUnlock()
		return os.ErrClosed
	}
	e := unix.EAGAIN
	if port != 0 {
		_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrNetlink)
	}
	if e == unix.EAGAIN {
		_, _, e = unix.Syscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
			0, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrNetlink)
	}
	c.mu.RUnlock()
	if e != 0 {
		return e
	}
	return nil
}

// check returns os.ErrClosed once the descriptor is closing.
func (c *fdConn) check() error {
	if c.closing.Load() {
		return os.ErrClosed
	}
	return nil
}

// close marks the descriptor closing, waits for the calls in progress (a
// waiting receive notices within a slice) and closes it.
func (c *fdConn) close() error {
	c.closing.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return os.NewSyscallError("close", err)
}

func (c *fdConn) setReadDeadline(d time.Time) error {
	if d.IsZero() {
		c.rdl.Store(0)
	} else {
		c.rdl.Store(max(d.UnixNano(), 1))
	}
	return c.check()
}

// recvWait receives a batch into m, waiting in the kernel a slice at a time;
// between slices it returns os.ErrClosed once the descriptor is closing and
// os.ErrDeadlineExceeded once the read deadline has passed.
//
// The socket's SO_RCVTIMEO is the slice, set once (leavePoller) and never
// changed: a deadline costs no system call of its own however often it
// changes. A wait whose deadline is nearer than the slice waits in poll(2)
// for the time left instead, rounded up to the millisecond (at most a
// millisecond late, as the kernel's own timeouts round up to its tick),
// then receives without waiting: two system calls for that wait, none to
// set a timeout. So a deadline set before every read, 10 ms or more away,
// leaves each wake-up at one recvmmsg.
func (c *fdConn) recvWait(m *transport.Mmsg) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return os.ErrClosed
	}
	fd := c.fd
	for {
		if c.closing.Load() {
			return os.ErrClosed
		}
		left := int64(kernelWaitSlice)
		if dl := c.rdl.Load(); dl != 0 {
			left = dl - time.Now().UnixNano()
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
		}
		ms := (left + int64(time.Millisecond) - 1) / int64(time.Millisecond)
		if ms >= int64(kernelWaitSlice/time.Millisecond) {
			if c.waitOnce(m, fd) {
				return nil
			}
			continue
		}
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd[:], int(ms))
		switch {
		case err == unix.EINTR, err == nil && n == 0:
			continue
		case err != nil:
			return err
		}
		if m.Read(uintptr(fd)) {
			return nil
		}
	}
}

// setSlice sets the socket's receive timeout to the wait slice.
func setSlice(fd int) error {
	tv := unix.NsecToTimeval(int64(kernelWaitSlice))
	return os.NewSyscallError("setsockopt", unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
}
