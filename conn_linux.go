//go:build linux

package connector

import (
	"errors"
	"fmt"
	"syscall"
	"time"
	"unsafe"

	"github.com/cnlink/connector/internal/transport"
	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// sockTransport is a real NETLINK_CONNECTOR socket. mdlayher/netlink opens and
// configures it; datagrams move through raw recvmmsg/sendto calls made on the
// socket's syscall.RawConn, so they stay on the Go runtime poller (deadlines,
// Close) without netlink.Conn's per-message allocations, and the sender's
// address is kept.
type sockTransport struct {
	nc   *netlink.Conn
	rc   syscall.RawConn
	port uint32
	ops  freeList[sendOp]
}

func dial(cfg *Config, mask uint32) (transport.Transport, error) {
	nc, err := netlink.Dial(unix.NETLINK_CONNECTOR, &netlink.Config{Groups: mask, NetNS: cfg.NetNS})
	if err != nil {
		return nil, err
	}
	rc, err := nc.SyscallConn()
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	// Blocking mode lets a sender wait in the kernel for room in a full
	// unicast receiver (see SendWait); every other call passes
	// MSG_DONTWAIT and stays non-blocking. The runtime poller keeps
	// watching the socket either way.
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetNonblock(int(fd), false); serr != nil {
			return
		}
		tv := unix.NsecToTimeval(int64(sendWaitSlice))
		serr = unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	})
	if err = errors.Join(err, serr); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("preparing the socket for blocking sends: %w", err)
	}
	t := &sockTransport{nc: nc, rc: rc, port: nc.PID()}
	t.ops.new = newSendOp
	return t, nil
}

// sendWaitSlice bounds one wait in the kernel for room in a full unicast
// receiver (SO_SNDTIMEO): between slices the Conn checks for Close and the
// write deadline, so both take effect within a slice.
const sendWaitSlice = 10 * time.Millisecond

// mmsghdr is struct mmsghdr from include/linux/socket.h (recvmmsg, Linux
// 2.6.33): a msghdr and the received length. Like C, Go rounds the struct's
// size up to its alignment (the pointer size), which gives the kernel's 64
// bytes on 64-bit and 32 bytes on 32-bit systems. It must not end in a
// zero-size field: Go pads such a field, which made the struct 36 bytes on
// 32-bit systems. layout_linux_test.go checks it against the C layout.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// Compile-time checks, on every GOARCH that builds the package: struct
// user_msghdr is seven pointer-sized slots (pointers, size_t, and ints
// padded to the pointer's alignment) and struct mmsghdr one more. A
// mismatch makes one of these array lengths negative.
const ptrSize = unsafe.Sizeof(uintptr(0))

var (
	_ [unsafe.Sizeof(mmsghdr{}) - 8*ptrSize]byte
	_ [8*ptrSize - unsafe.Sizeof(mmsghdr{})]byte
	_ [unsafe.Offsetof(mmsghdr{}.Len) - 7*ptrSize]byte
	_ [7*ptrSize - unsafe.Offsetof(mmsghdr{}.Len)]byte
)

// mmsgState is the preset recvmmsg state kept with a transport.Batch.
type mmsgState struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrNetlink
	fn    func(fd uintptr) bool // for RawConn.Read: waits while nothing is queued
	try   func(fd uintptr)      // for RawConn.Control: EAGAIN while nothing is queued
	n     int
	err   syscall.Errno
}

func newMmsgState(b *transport.Batch) *mmsgState {
	n := len(b.Bufs)
	st := &mmsgState{
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrNetlink, n),
	}
	for i := range st.hdrs {
		st.iovs[i].Base = unsafe.SliceData(b.Bufs[i])
		st.iovs[i].SetLen(len(b.Bufs[i]))
		h := &st.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&st.names[i]))
		h.Iov = &st.iovs[i]
		h.SetIovlen(1)
	}
	st.fn = st.recv
	st.try = func(fd uintptr) {
		if !st.recv(fd) {
			st.err = unix.EAGAIN
		}
	}
	return st
}

func (st *mmsgState) recv(fd uintptr) bool {
	for i := range st.hdrs {
		st.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
		st.hdrs[i].Hdr.Flags = 0
		st.hdrs[i].Len = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&st.hdrs[0])), uintptr(len(st.hdrs)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		switch e {
		case 0:
			st.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			st.err = e
			return true
		}
	}
}

func (t *sockTransport) Recv(b *transport.Batch, block bool) (int, error) {
	st, ok := b.Sys.(*mmsgState)
	if !ok || len(st.hdrs) != len(b.Bufs) {
		st = newMmsgState(b)
		b.Sys = st
	}
	st.n, st.err = 0, 0
	var err error
	if block {
		err = t.rc.Read(st.fn)
	} else {
		err = t.rc.Control(st.try)
	}
	if err != nil {
		return 0, err
	}
	if st.err != 0 {
		return 0, st.err
	}
	for i := 0; i < st.n; i++ {
		h := &st.hdrs[i]
		b.Meta[i] = transport.Meta{
			N:      int(h.Len),
			Port:   st.names[i].Pid,
			Groups: st.names[i].Groups,
			Trunc:  h.Hdr.Flags&unix.MSG_TRUNC != 0,
		}
	}
	return st.n, nil
}

// sendOp is a pooled sendto call with its closure prebuilt.
type sendOp struct {
	p      []byte
	sa     unix.RawSockaddrNetlink
	err    syscall.Errno
	fn     func(fd uintptr) bool
	waitFn func(fd uintptr)
}

func newSendOp() *sendOp {
	op := &sendOp{}
	op.sa.Family = unix.AF_NETLINK
	op.fn = op.send
	op.waitFn = op.sendWait
	return op
}

func (op *sendOp) send(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(op.p))), uintptr(len(op.p)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&op.sa)), unix.SizeofSockaddrNetlink)
		if e == unix.EINTR {
			continue
		}
		op.err = e
		// EAGAIN (a full unicast receiver) is left to the caller, which
		// waits with SendWait: the socket's poll state does not change
		// when the receiver drains, so the poller cannot wait for it.
		return true
	}
}

// sendWait sends without MSG_DONTWAIT: the kernel parks the thread on the
// receiver's wait queue until it has room, for at most sendWaitSlice
// (EAGAIN then). A signal ends the wait early with EINTR.
func (op *sendOp) sendWait(fd uintptr) {
	_, _, op.err = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(op.p))), uintptr(len(op.p)),
		0, uintptr(unsafe.Pointer(&op.sa)), unix.SizeofSockaddrNetlink)
}

func (t *sockTransport) Send(p []byte, port, groups uint32) error {
	op := t.ops.get()
	op.p, op.sa.Pid, op.sa.Groups, op.err = p, port, groups, 0
	err := t.rc.Write(op.fn)
	if err == nil && op.err != 0 {
		err = op.err
	}
	op.p = nil
	t.ops.put(op)
	return err
}

// SendWait sends p, waiting up to sendWaitSlice in the kernel for room in a
// full unicast receiver; it returns EAGAIN if there was none by then. It
// runs under Control rather than Write so that a wait does not hold the
// socket's write lock: other senders on the Conn carry on meanwhile.
func (t *sockTransport) SendWait(p []byte, port, groups uint32) error {
	op := t.ops.get()
	op.p, op.sa.Pid, op.sa.Groups, op.err = p, port, groups, 0
	err := t.rc.Control(op.waitFn)
	if err == nil && op.err != 0 {
		err = op.err
	}
	op.p = nil
	t.ops.put(op)
	return err
}

func (t *sockTransport) Join(group uint32) error  { return t.nc.JoinGroup(group) }
func (t *sockTransport) Leave(group uint32) error { return t.nc.LeaveGroup(group) }
func (t *sockTransport) PortID() uint32           { return t.port }
func (t *sockTransport) Close() error             { return t.nc.Close() }

func (t *sockTransport) Memberships() (uint32, error) {
	var (
		v    int
		serr error
	)
	err := t.rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS)
	})
	if err != nil {
		return 0, err
	}
	return uint32(v), serr
}

func (t *sockTransport) SetReadDeadline(d time.Time) error  { return t.nc.SetReadDeadline(d) }
func (t *sockTransport) SetWriteDeadline(d time.Time) error { return t.nc.SetWriteDeadline(d) }

// SetReadBuffer sets SO_RCVBUFFORCE, or SO_RCVBUF without CAP_NET_ADMIN.
// The Conn has checked that n fits the kernel's int.
func (t *sockTransport) SetReadBuffer(n int) error {
	return t.setBuffer(unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, n)
}

// SetWriteBuffer sets SO_SNDBUFFORCE, or SO_SNDBUF without CAP_NET_ADMIN.
func (t *sockTransport) SetWriteBuffer(n int) error {
	return t.setBuffer(unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, n)
}

func (t *sockTransport) setBuffer(force, plain, n int) error {
	return t.control(func(fd int) error {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, n)
		if err == unix.EPERM {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, n)
		}
		return err
	})
}

func (t *sockTransport) ReadBuffer() (int, error)  { return t.getInt(unix.SOL_SOCKET, unix.SO_RCVBUF) }
func (t *sockTransport) WriteBuffer() (int, error) { return t.getInt(unix.SOL_SOCKET, unix.SO_SNDBUF) }

func (t *sockTransport) getInt(level, opt int) (int, error) {
	var v int
	err := t.control(func(fd int) error {
		var err error
		v, err = unix.GetsockoptInt(fd, level, opt)
		return err
	})
	return v, err
}

// control runs fn on the socket's file descriptor and returns its error,
// or the error of reaching the descriptor (the socket is closed).
func (t *sockTransport) control(fn func(fd int) error) error {
	var ferr error
	if err := t.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
func (t *sockTransport) SyscallConn() (syscall.RawConn, error) {
	return t.rc, nil
}

func (t *sockTransport) SetNoENOBUFS(on bool) error {
	return t.nc.SetOption(netlink.NoENOBUFS, on)
}

func (t *sockTransport) SetBPF(filter []bpf.RawInstruction) error {
	if len(filter) == 0 {
		return t.RemoveBPF()
	}
	if len(filter) > bpfMaxInsns {
		// The program length is a 16-bit field: a longer program must not
		// reach the kernel cut short.
		return fmt.Errorf("a socket filter may have at most %d instructions (BPF_MAXINSNS), not %d: %w", bpfMaxInsns, len(filter), unix.EINVAL)
	}
	ins := make([]unix.SockFilter, len(filter))
	for i, f := range filter {
		ins[i] = unix.SockFilter{Code: f.Op, Jt: f.Jt, Jf: f.Jf, K: f.K}
	}
	prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
	var serr error
	err := t.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	})
	if err != nil {
		return err
	}
	return serr
}

// bpfMaxInsns is BPF_MAXINSNS from include/uapi/linux/bpf_common.h (Linux
// 2.6.x and later): the most instructions a classic BPF program may have.
const bpfMaxInsns = 4096

func (t *sockTransport) RemoveBPF() error {
	var serr error
	err := t.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	})
	if err != nil {
		return err
	}
	return serr
}
