//go:build linux

package connector

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/cnlink/connector/internal/transport"
	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// sockTransport is the Linux side of a Conn: a real NETLINK_CONNECTOR
// socket. mdlayher/netlink opens and binds it (in another network namespace
// if asked); datagrams and options go through raw system calls on the
// socket's syscall.RawConn, so they stay on the Go runtime poller (deadlines,
// Close) without netlink.Conn's per-message allocations, the sender's
// address is kept, and every error is the kernel's bare errno.
type sockTransport struct {
	nc   *netlink.Conn // nil with Config.KernelWait
	rc   syscall.RawConn
	port uint32
	ops  freeList[sendOp]
	kw   *fdConn // with Config.KernelWait: the socket, off the poller (kernelwait_linux.go)

	drops dropsOp
}

// dropsOp is the getsockopt(SO_MEMINFO) call of Drops, prebuilt so that a
// read allocates nothing; mu serializes its users.
type dropsOp struct {
	mu  sync.Mutex
	fn  func(fd uintptr)
	v   uint64
	err error
}

var _ transport.Transport = (*sockTransport)(nil)

// dial opens the socket. Its errors are *os.SyscallError values that name
// the failing system call (socket, setns, bind), because the advice for an
// errno depends on the step; mapDialErr writes it.
func dial(cfg *Config, mask uint32) (transport.Transport, error) {
	nc, err := netlink.Dial(unix.NETLINK_CONNECTOR, &netlink.Config{Groups: mask, NetNS: cfg.NetNS})
	if err != nil {
		return nil, syscallError(err)
	}
	rc, err := nc.SyscallConn()
	if err != nil {
		_ = nc.Close()
		return nil, syscallError(err)
	}
	t := &sockTransport{nc: nc, rc: rc, port: nc.PID()}
	t.ops.new = newSendOp
	t.drops.fn = func(fd uintptr) { t.drops.v, t.drops.err = getDrops(int(fd)) }
	// Blocking mode lets a sender wait in the kernel for room in a full
	// unicast receiver (see SendWait); every other call passes
	// MSG_DONTWAIT and stays non-blocking. The runtime poller keeps
	// watching the socket either way.
	err = t.control(func(fd int) error {
		if err := unix.SetNonblock(fd, false); err != nil {
			return os.NewSyscallError("fcntl", err)
		}
		tv := unix.NsecToTimeval(int64(sendWaitSlice))
		return os.NewSyscallError("setsockopt", unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv))
	})
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	if cfg.KernelWait {
		return t, t.leavePoller(cfg.RawWait)
	}
	return t, nil
}

// kernelWaitSocket returns t's socket if t is a Config.KernelWait socket
// transport, for the Conn's direct send path; nil otherwise.
func kernelWaitSocket(t transport.Transport) *fdConn {
	if s, ok := t.(*sockTransport); ok {
		return s.kw
	}
	return nil
}

// syscallError reduces an error of mdlayher/netlink to the system call and
// its errno, without the library's own text.
func syscallError(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return os.NewSyscallError(se.Syscall, bare(se.Err))
	}
	return bare(err)
}

// bare returns the errno inside err, or the os sentinel it matches. The
// common cases (nil, an Errno) cost nothing: this is on the send path.
func bare(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return bareSlow(err)
}

func bareSlow(err error) error {
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, os.ErrDeadlineExceeded):
		return os.ErrDeadlineExceeded
	case errors.Is(err, os.ErrClosed):
		return os.ErrClosed
	}
	return err
}

// sendWaitSlice bounds one wait in the kernel for room in a full unicast
// receiver (SO_SNDTIMEO): between slices the Conn checks for Close and the
// write deadline, so both take effect within a slice.
const sendWaitSlice = 10 * time.Millisecond

func (t *sockTransport) PortID() uint32 { return t.port }

// Recv receives with one recvmmsg call into the batch's preset headers.
func (t *sockTransport) Recv(b *transport.Batch, block bool) (int, error) {
	m := &b.Mmsg
	m.Prepare(b)
	var err error
	switch {
	case block && t.kw != nil:
		err = t.kw.recvWait(m)
	case block:
		err = t.rc.Read(m.Read)
	default:
		err = t.rc.Control(m.Try)
	}
	if err != nil {
		return 0, bare(err)
	}
	if m.Err != 0 {
		return 0, m.Err
	}
	m.Fill(b)
	return m.N, nil
}

// sendOp is a pooled sendto call with its closures prebuilt.
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

// send makes one sendto without waiting. A unicast to a userspace socket
// cannot sleep then, so it is a raw system call, without the runtime's
// entersyscall and exitsyscall (fdConn.sendto says more); a send to the
// kernel or a multicast runs the kernel agent's callback in this thread,
// which may sleep, so it is an ordinary one.
func (op *sendOp) send(fd uintptr) bool {
	for {
		var e syscall.Errno
		if op.sa.Pid != 0 {
			_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(op.p))), uintptr(len(op.p)),
				unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&op.sa)), unix.SizeofSockaddrNetlink)
		} else {
			_, _, e = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(op.p))), uintptr(len(op.p)),
				unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&op.sa)), unix.SizeofSockaddrNetlink)
		}
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
	if t.kw != nil {
		return t.kw.sendto(p, port, groups)
	}
	return t.sendto(p, port, groups, false)
}

// SendWait runs under Control rather than Write so that a wait does not
// hold the socket's write lock: other senders on the Conn carry on
// meanwhile.
func (t *sockTransport) SendWait(p []byte, port, groups uint32) error {
	return t.sendto(p, port, groups, true)
}

func (t *sockTransport) sendto(p []byte, port, groups uint32, wait bool) error {
	if t.kw != nil {
		// With Config.KernelWait every send may wait in the kernel, as a
		// C sender does: a unicast to a full receiver sleeps there until
		// it has room, for at most a slice (sends to the kernel and
		// multicasts never wait).
		return t.kw.sendto(p, port, groups)
	}
	op := t.ops.get()
	op.p, op.sa.Pid, op.sa.Groups, op.err = p, port, groups, 0
	var err error
	if wait {
		err = t.rc.Control(op.waitFn)
	} else {
		err = t.rc.Write(op.fn)
	}
	if err == nil && op.err != 0 {
		err = op.err
	}
	op.p = nil
	t.ops.put(op)
	return bare(err)
}

func (t *sockTransport) Join(group uint32) error {
	return t.setInt(unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(group))
}

func (t *sockTransport) Leave(group uint32) error {
	return t.setInt(unix.SOL_NETLINK, unix.NETLINK_DROP_MEMBERSHIP, int(group))
}

// Memberships reads NETLINK_LIST_MEMBERSHIPS: the connector has 32 groups,
// so one 32-bit word holds them all.
func (t *sockTransport) Memberships() (uint32, error) {
	v, err := t.getInt(unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS)
	return uint32(v), err
}

func (t *sockTransport) SetReadDeadline(d time.Time) error {
	if t.kw != nil {
		return t.kw.setReadDeadline(d)
	}
	return bare(t.nc.SetReadDeadline(d))
}

// SetWriteDeadline sets the poller's write deadline. With Config.KernelWait
// there is no poller and no send waits there: the Conn bounds its waits for
// room in a full receiver (SendWait) by the deadline it keeps itself.
func (t *sockTransport) SetWriteDeadline(d time.Time) error {
	if t.kw != nil {
		return t.kw.check()
	}
	return bare(t.nc.SetWriteDeadline(d))
}

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

func (t *sockTransport) SetNoENOBUFS(on bool) error {
	v := 0
	if on {
		v = 1
	}
	return t.setInt(unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, v)
}

// NoENOBUFS reads NETLINK_NO_ENOBUFS back: the kernel answers 1 or 0
// (net/netlink/af_netlink.c, netlink_getsockopt).
func (t *sockTransport) NoENOBUFS() (bool, error) {
	v, err := t.getInt(unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS)
	return v != 0, err
}

// SetBPF attaches the filter with SO_ATTACH_FILTER, or detaches the current
// one (SO_DETACH_FILTER) when it is empty.
func (t *sockTransport) SetBPF(filter []bpf.RawInstruction) error {
	if len(filter) == 0 {
		return t.setInt(unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	}
	ins := make([]unix.SockFilter, len(filter))
	for i, f := range filter {
		ins[i] = unix.SockFilter{Code: f.Op, Jt: f.Jt, Jf: f.Jf, K: f.K}
	}
	prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
	return t.control(func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	})
}

func (t *sockTransport) SyscallConn() (syscall.RawConn, error) { return t.rc, nil }

// Drops reads sk_drops with getsockopt(SO_MEMINFO), which the kernel answers
// for the socket itself, in whatever network namespace.
func (t *sockTransport) Drops() (uint64, error) {
	d := &t.drops
	d.mu.Lock()
	defer d.mu.Unlock()
	d.v, d.err = 0, nil
	if err := t.rc.Control(d.fn); err != nil {
		return 0, bare(err)
	}
	return d.v, d.err
}

// skMeminfoVars and skMeminfoDrops are SK_MEMINFO_VARS and SK_MEMINFO_DROPS
// (include/uapi/linux/sock_diag.h): SO_MEMINFO returns an array of u32, the
// drop counter at index 8 since Linux 4.7.
const (
	skMeminfoVars  = 9
	skMeminfoDrops = 8
)

// getDrops returns the drop counter, or a bare errno; a kernel whose
// SO_MEMINFO has no drop counter (before 4.7) gives ErrUnsupported.
func getDrops(fd int) (uint64, error) {
	var m [skMeminfoVars]uint32
	l := uint32(unsafe.Sizeof(m))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&m[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	if l < (skMeminfoDrops+1)*4 {
		return 0, transport.ErrUnsupported
	}
	return uint64(m[skMeminfoDrops]), nil
}

func (t *sockTransport) Close() error {
	if t.kw != nil {
		return t.kw.close()
	}
	return bare(t.nc.Close())
}

func (t *sockTransport) setInt(level, opt, v int) error {
	return t.control(func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) })
}

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
// or the error of reaching the descriptor (the socket is closed), bare.
func (t *sockTransport) control(fn func(fd int) error) error {
	var ferr error
	if err := t.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return bare(err)
	}
	return bare(ferr)
}
