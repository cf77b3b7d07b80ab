//go:build linux

package main

import (
	"encoding/binary"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawRecv is the floor: golang.org/x/sys/unix only, one buffer reused for
// ever, blocking recvmmsg straight on the file descriptor (no runtime poller),
// and just the checks any correct reader needs (sender is the kernel, no
// truncation, lengths before slicing).
type rawRecv struct {
	fd      int
	t       *tally
	buf     []byte
	size    int
	hdrs    []mmsghdr
	iovs    []unix.Iovec
	names   []unix.RawSockaddrNetlink
	stopped atomic.Bool
	// rawSys makes recvmmsg with unix.RawSyscall6, without telling the
	// runtime scheduler about the system call (go-rawsys).
	rawSys bool
}

// mmsghdr is struct mmsghdr (include/linux/socket.h, recvmmsg since Linux
// 2.6.33); x/sys/unix does not define it. The C struct is a user_msghdr and
// an unsigned int, padded to the alignment of its pointers: 64 bytes on 64-bit
// systems, 32 on 32-bit ones. Go pads it the same way by itself; an explicit
// trailing pad field would be zero-sized on 32-bit systems, and Go gives a
// struct that ends in a zero-sized field an extra word (36 bytes), which
// misplaces every entry of a batch after the first. layout_linux.go checks
// the size and offsets at compile time on every GOARCH.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

func init() { receivers["raw"] = func() receiver { return &rawRecv{} } }

// rawProcSocket opens and subscribes a proc connector socket the plain way.
func rawProcSocket(rcvbuf int, noENOBUFS bool) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return -1, err
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if noENOBUFS {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (cnIdxProc - 1)}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Sendto(fd, nlmsg(procMcastMsg(procCnMcastListen, 0), 0), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (r *rawRecv) start(o *recvOpts, t *tally) error {
	fd, err := rawProcSocket(o.rcvbuf, o.noENOBUFS)
	if err != nil {
		return err
	}
	// Wake up now and then to notice stop.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000}); err != nil {
		unix.Close(fd)
		return err
	}
	r.t = t
	r.setup(fd, o.batch, o.msgbuf)
	return nil
}

// setup takes fd and allocates the batch of batch buffers of msgbuf bytes
// that recvmmsg fills.
func (r *rawRecv) setup(fd, batch, msgbuf int) {
	r.fd, r.size = fd, msgbuf
	r.buf = make([]byte, batch*msgbuf)
	r.hdrs = make([]mmsghdr, batch)
	r.iovs = make([]unix.Iovec, batch)
	r.names = make([]unix.RawSockaddrNetlink, batch)
	for i := range r.hdrs {
		r.iovs[i].Base = &r.buf[i*msgbuf]
		r.iovs[i].SetLen(msgbuf)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
	}
}

// recvmmsg reads up to a batch of datagrams from fd with flags.
func (r *rawRecv) recvmmsg(fd uintptr, flags int) (int, syscall.Errno) {
	for i := range r.hdrs {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
	}
	if r.rawSys {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
			uintptr(flags), 0, 0)
		return int(n), e
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
		uintptr(flags), 0, 0)
	return int(n), e
}

// payload returns the payload of datagram i of the last batch: the bytes
// after its netlink header, within the length the header gives. It is false
// for a truncated or malformed datagram.
func (r *rawRecv) payload(i int) ([]byte, bool) {
	h := &r.hdrs[i]
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return nil, false
	}
	b := r.buf[i*r.size : i*r.size+int(h.Len)]
	if len(b) < nlmsgHdrLen {
		return nil, false
	}
	l := int(binary.NativeEndian.Uint32(b[0:4]))
	if l < nlmsgHdrLen || l > len(b) {
		return nil, false
	}
	return b[nlmsgHdrLen:l], true
}

func (r *rawRecv) run() error {
	for !r.stopped.Load() {
		n, e := r.recvmmsg(uintptr(r.fd), unix.MSG_WAITFORONE)
		switch e {
		case 0:
		case unix.EAGAIN, unix.EINTR:
			continue
		case unix.ENOBUFS:
			r.t.enobufs.Add(1)
			continue
		default:
			return e
		}
		r.batch(n)
	}
	return nil
}

// batch counts the first n datagrams of the buffer.
func (r *rawRecv) batch(n int) {
	for i := 0; i < n; i++ {
		p, ok := r.payload(i)
		if !ok || r.names[i].Pid != 0 {
			r.t.other.Add(1)
			continue
		}
		idx, val, data, ok := cnMsg(p)
		if !ok || idx != cnIdxProc || val != cnValProc {
			r.t.other.Add(1)
			continue
		}
		r.t.procEvent(data)
	}
}

func (r *rawRecv) stop() {
	_ = unix.Sendto(r.fd, nlmsg(procMcastMsg(procCnMcastIgnore, 0), 0), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	r.stopped.Store(true)
}

func (r *rawRecv) rcvbuf() int {
	n, _ := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	return n
}

// rawPollRecv is rawRecv read through the Go runtime poller instead of
// blocking in the kernel: the socket is non-blocking and recvmmsg runs inside
// syscall.RawConn.Read, as a library must do to honour deadlines and Close.
// It shows what the poller itself costs.
type rawPollRecv struct {
	rawRecv
	f  *os.File
	rc syscall.RawConn
	fn func(fd uintptr) bool
	n  int
	e  syscall.Errno
}

func init() { receivers["raw-poll"] = func() receiver { return &rawPollRecv{} } }

func (r *rawPollRecv) start(o *recvOpts, t *tally) error {
	if err := r.rawRecv.start(o, t); err != nil {
		return err
	}
	if err := unix.SetNonblock(r.fd, true); err != nil {
		return err
	}
	r.f = os.NewFile(uintptr(r.fd), "netlink")
	rc, err := r.f.SyscallConn()
	if err != nil {
		return err
	}
	r.rc = rc
	r.fn = func(fd uintptr) bool {
		n, e := r.recvmmsg(fd, unix.MSG_DONTWAIT)
		if e == unix.EAGAIN {
			return false
		}
		r.n, r.e = n, e
		return true
	}
	return nil
}

func (r *rawPollRecv) run() error {
	for {
		if err := r.rc.Read(r.fn); err != nil {
			if r.stopped.Load() {
				return nil
			}
			return err
		}
		switch r.e {
		case 0:
		case unix.EINTR:
			continue
		case unix.ENOBUFS:
			r.t.enobufs.Add(1)
			continue
		default:
			return r.e
		}
		r.batch(r.n)
	}
}

func (r *rawPollRecv) stop() {
	_ = unix.Sendto(r.fd, nlmsg(procMcastMsg(procCnMcastIgnore, 0), 0), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	r.stopped.Store(true)
	_ = r.f.Close()
}

// lockedRecv is the Go floor the way a C program reads: the raw loop with a
// fixed batch of 64 (recvmmsg with MSG_WAITFORONE), blocking in the kernel
// on an OS thread of its own (runtime.LockOSThread), x/sys only.
type lockedRecv struct{ rawRecv }

func init() { receivers["go-recvmmsg"] = func() receiver { return &lockedRecv{} } }

// go-rawsys is go-recvmmsg making its recvmmsg with RawSyscall6:
// the runtime does not know the thread is in a system call (no
// entersyscall/exitsyscall), so the goroutine keeps its processor while it
// waits (at most the 50 ms SO_RCVTIMEO). It isolates what the scheduler's
// system call bookkeeping costs the Go loop.
func init() {
	receivers["go-rawsys"] = func() receiver { r := &lockedRecv{}; r.rawSys = true; return r }
}

func (r *lockedRecv) start(o *recvOpts, t *tally) error {
	oo := *o
	oo.batch, oo.msgbuf = 64, 8192
	return r.rawRecv.start(&oo, t)
}

func (r *lockedRecv) run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return r.rawRecv.run()
}

// lockedPolledRecv is lockedRecv with its socket also registered with the
// runtime poller (os.NewFile of a non-blocking descriptor), then made
// blocking again, as a library socket opened through the poller is: it
// shows what the registration alone costs a reader that waits in the
// kernel (every datagram also wakes the runtime's epoll_pwait).
type lockedPolledRecv struct {
	lockedRecv
	f *os.File
}

func init() { receivers["go-recvmmsg-polled"] = func() receiver { return &lockedPolledRecv{} } }

func (r *lockedPolledRecv) start(o *recvOpts, t *tally) error {
	if err := r.lockedRecv.start(o, t); err != nil {
		return err
	}
	d, err := unix.Dup(r.fd)
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(d, true); err != nil {
		return err
	}
	r.f = os.NewFile(uintptr(d), "netlink-dup") // registers with the poller
	if _, err := r.f.SyscallConn(); err != nil {
		return err
	}
	return unix.SetNonblock(r.fd, false) // O_NONBLOCK is shared by dups
}
