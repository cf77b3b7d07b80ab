//go:build linux

package main

import (
	"encoding/binary"
	"os"
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
}

// mmsghdr is struct mmsghdr (include/linux/socket.h, recvmmsg since Linux
// 2.6.33); x/sys/unix does not define it.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
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
	r.fd, r.t, r.size = fd, t, o.msgbuf
	r.buf = make([]byte, o.batch*o.msgbuf)
	r.hdrs = make([]mmsghdr, o.batch)
	r.iovs = make([]unix.Iovec, o.batch)
	r.names = make([]unix.RawSockaddrNetlink, o.batch)
	for i := range r.hdrs {
		r.iovs[i].Base = &r.buf[i*o.msgbuf]
		r.iovs[i].SetLen(o.msgbuf)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
	}
	return nil
}

func (r *rawRecv) run() error {
	for !r.stopped.Load() {
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
		}
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
			unix.MSG_WAITFORONE, 0, 0)
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
		r.batch(int(n))
	}
	return nil
}

// batch counts the first n datagrams of the buffer.
func (r *rawRecv) batch(n int) {
	for i := 0; i < n; i++ {
		h := &r.hdrs[i]
		if r.names[i].Pid != 0 || h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			r.t.other.Add(1)
			continue
		}
		b := r.buf[i*r.size : i*r.size+int(h.Len)]
		if len(b) < nlmsgHdrLen {
			r.t.other.Add(1)
			continue
		}
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			r.t.other.Add(1)
			continue
		}
		idx, val, data, ok := cnMsg(b[nlmsgHdrLen:l])
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
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
		}
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		r.n, r.e = int(n), e
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
