package cntest

import (
	"math"
	"os"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/transport"
	"golang.org/x/net/bpf"
)

// A socket is one fake netlink socket: the transport under a Conn. All its
// state is guarded by the kernel's mutex.
type socket struct {
	k      *Kernel
	port   uint32
	priv   bool
	groups uint32 // joined groups, as a bitmask

	q         ring
	rcvbuf    int // sk_rcvbuf
	rmem      int // sk_rmem_alloc: the truesize of the queued datagrams
	sndbuf    int
	noENOBUFS bool
	congested bool   // NETLINK_S_CONGESTED
	errPend   bool   // sk_err = ENOBUFS, reported by the next receive
	drops     uint64 // sk_drops
	refused   uint64 // userspace unicasts told to wait
	// room is closed and replaced when a receive takes datagrams while
	// senders wait for room (sendWaiters).
	room        chan struct{}
	sendWaiters int
	closed      bool

	rdeadline time.Time
	wdeadline time.Time
	waiting   int           // receives blocked on this socket
	wake      chan struct{} // capacity 1: data, an error or a deadline change
	done      chan struct{} // closed by Close
	dlc       chan struct{} // closed and replaced when the read deadline changes
}

var _ transport.Transport = (*socket)(nil)

// signal wakes one waiting receive without blocking. A receive that takes
// data and leaves some queued signals again, so that wake-ups chain to every
// waiting receive.
func (s *socket) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueueLocked queues a copy of p from the given sender, charged its
// truesize against the receive buffer. It is queued when the socket is not
// congested and its queue is empty or the charges, p's own included, stay
// within the buffer (netlink_broadcast_deliver, netlink_attachskb in
// net/netlink/af_netlink.c). Otherwise a message from the kernel or a
// multicast (overrun true) is dropped and an overrun is recorded
// (netlink_overrun); a userspace unicast is refused with EAGAIN, the
// sender's cue to wait.
func (s *socket) enqueueLocked(p []byte, port, groups uint32, overrun bool) error {
	if s.closed {
		return syscall.ECONNREFUSED
	}
	charge := trueSize(len(p), !overrun, s.k.smallHead)
	if s.congested || s.rmem != 0 && s.rmem+charge > s.rcvbuf {
		if !overrun {
			s.refused++
			s.k.notifyLocked()
			return syscall.EAGAIN
		}
		s.overrunLocked()
		return syscall.ENOBUFS
	}
	s.rmem += charge
	s.q.push(p, port, groups, charge)
	s.signal()
	return nil
}

// overrunLocked records one dropped message as netlink_overrun does: unless
// NETLINK_NO_ENOBUFS is set, the first drop sets the pending ENOBUFS error
// and marks the socket congested; later drops while congested only count.
func (s *socket) overrunLocked() {
	s.drops++
	if !s.noENOBUFS && !s.congested {
		s.congested = true
		s.errPend = true
		s.signal()
	}
}

// rcvWakeLocked clears the congestion once the queue is empty, as
// netlink_rcv_wake does after every receive.
func (s *socket) rcvWakeLocked() {
	if s.q.n == 0 {
		s.congested = false
	}
}

// Recv implements transport.Transport like recvmmsg: it waits until at least
// one datagram is queued (or, with block false, fails with EAGAIN), then
// takes as many as fit in b. A pending overrun
// is reported first, as an error, before any queued datagram. A datagram
// longer than its buffer is cut, with Meta.Trunc set and Meta.N its full
// length. It allocates nothing unless it has to wait with a deadline set.
func (s *socket) Recv(b *transport.Batch, block bool) (int, error) {
	k := s.k
	for {
		k.mu.Lock()
		if s.closed {
			k.mu.Unlock()
			return 0, os.ErrClosed
		}
		dl := s.rdeadline
		if block && !dl.IsZero() && !time.Now().Before(dl) {
			k.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if s.errPend {
			s.errPend = false
			s.rcvWakeLocked()
			more := s.q.n > 0
			k.mu.Unlock()
			if more {
				s.signal()
			}
			return 0, syscall.ENOBUFS
		}
		if s.q.n > 0 && len(b.Bufs) > 0 {
			n := 0
			for n < len(b.Bufs) && s.q.n > 0 {
				d := s.q.front()
				copy(b.Bufs[n], d.buf)
				b.Meta[n] = transport.Meta{N: len(d.buf), Port: d.port, Groups: d.groups, Trunc: len(d.buf) > len(b.Bufs[n])}
				s.rmem -= d.charge
				s.q.pop()
				n++
			}
			if s.sendWaiters > 0 {
				close(s.room)
				s.room = make(chan struct{})
			}
			s.rcvWakeLocked()
			more := s.q.n > 0
			k.mu.Unlock()
			if more {
				s.signal()
			}
			return n, nil
		}
		s.rcvWakeLocked()
		if !block {
			k.mu.Unlock()
			return 0, syscall.EAGAIN
		}
		s.waiting++
		dlc := s.dlc
		k.notifyLocked()
		k.mu.Unlock()

		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			t = time.NewTimer(time.Until(dl))
			timeout = t.C
		}
		select {
		case <-s.wake:
		case <-s.done:
		case <-dlc:
		case <-timeout:
		}
		if t != nil {
			t.Stop()
		}
		k.mu.Lock()
		s.waiting--
		k.mu.Unlock()
	}
}

// Send implements transport.Transport.
func (s *socket) Send(p []byte, port, groups uint32) error {
	return s.k.send(s, p, port, groups)
}

// sendWaitSlice bounds one SendWait, as SO_SNDTIMEO bounds the real
// socket's wait for room in a full receiver.
const sendWaitSlice = 10 * time.Millisecond

// SendWait implements transport.Transport: a unicast refused for a full
// receiver waits, for at most sendWaitSlice, until that receiver has taken
// datagrams from its queue, then tries once more.
func (s *socket) SendWait(p []byte, port, groups uint32) error {
	err := s.Send(p, port, groups)
	if err != syscall.EAGAIN {
		return err
	}
	k := s.k
	k.mu.Lock()
	dst := k.socks[port]
	if dst == nil {
		k.mu.Unlock()
		return s.Send(p, port, groups)
	}
	dst.sendWaiters++
	room := dst.room
	k.mu.Unlock()
	t := time.NewTimer(sendWaitSlice)
	select {
	case <-room:
	case <-t.C:
	case <-s.done:
	}
	t.Stop()
	k.mu.Lock()
	dst.sendWaiters--
	k.mu.Unlock()
	return s.Send(p, port, groups)
}

// SetBPF implements transport.Transport: the fake does not model socket
// filters.
func (s *socket) SetBPF([]bpf.RawInstruction) error { return transport.ErrUnsupported }

// SyscallConn implements transport.Transport: a fake socket has no file
// descriptor.
func (s *socket) SyscallConn() (syscall.RawConn, error) { return nil, transport.ErrUnsupported }

// Drops returns the socket's drop counter (sk_drops), which follows the
// kernel's rules: a message from the kernel or a multicast that finds the
// queue full or congested is dropped and counted (netlink_overrun); a
// userspace unicast is refused instead (Refused) and not counted.
func (s *socket) Drops() (uint64, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	return s.drops, nil
}

// Join implements transport.Transport (NETLINK_ADD_MEMBERSHIP).
func (s *socket) Join(group uint32) error {
	g := connector.Group(group)
	if !g.Valid() {
		return syscall.EINVAL
	}
	if !joinAllowed(g.Mask(), s.priv) {
		return syscall.EPERM
	}
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.groups |= g.Mask()
	return nil
}

// Leave implements transport.Transport (NETLINK_DROP_MEMBERSHIP).
func (s *socket) Leave(group uint32) error {
	g := connector.Group(group)
	if !g.Valid() {
		return syscall.EINVAL
	}
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.groups &^= g.Mask()
	return nil
}

// Memberships implements transport.Transport (NETLINK_LIST_MEMBERSHIPS).
func (s *socket) Memberships() (uint32, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	return s.groups, nil
}

// PortID implements transport.Transport.
func (s *socket) PortID() uint32 { return s.port }

// Close implements transport.Transport: the socket leaves the kernel, its
// queue is discarded and blocked receives return.
func (s *socket) Close() error {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.closed = true
	s.groups = 0
	s.q = ring{}
	delete(k.socks, s.port)
	close(s.done)
	return nil
}

// SetReadDeadline implements transport.Transport; it applies to receives
// already waiting.
func (s *socket) SetReadDeadline(t time.Time) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.rdeadline = t
	close(s.dlc)
	s.dlc = make(chan struct{})
	return nil
}

// SetWriteDeadline implements transport.Transport. Sends never block in the
// fake (a full receiver gives EAGAIN, which the Conn retries until its write
// deadline), so the deadline is only kept.
func (s *socket) SetWriteDeadline(t time.Time) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.wdeadline = t
	return nil
}

// SetReadBuffer sets the receive buffer as SO_RCVBUFFORCE does for a
// privileged socket and SO_RCVBUF for another (see bufSize). Queued
// datagrams are charged against it by their truesize (see enqueueLocked).
func (s *socket) SetReadBuffer(n int) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.rcvbuf = bufSize(n, s.priv, s.k.opts.RmemMax, minRcvBuf)
	return nil
}

// ReadBuffer returns the receive buffer size (SO_RCVBUF).
func (s *socket) ReadBuffer() (int, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	return s.rcvbuf, nil
}

// SetWriteBuffer sets the send buffer as SO_SNDBUFFORCE or SO_SNDBUF does
// (see bufSize). Sends larger than the buffer fail with EMSGSIZE.
func (s *socket) SetWriteBuffer(n int) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.sndbuf = bufSize(n, s.priv, s.k.opts.WmemMax, minSndBuf)
	return nil
}

// bufSize is the buffer size the kernel keeps after
// setsockopt(SO_RCVBUF/SO_SNDBUF, n), as sk_setsockopt and
// __sock_set_rcvbuf compute it (net/core/sock.c, Linux 5.10 to 7.3): n
// arrives as a C int (the low 32 bits); a privileged socket
// (SO_*BUFFORCE) raises a negative value to 0, an unprivileged one caps the
// value at sysMax compared as unsigned (so a negative value gets sysMax);
// then the value is capped at INT_MAX/2, doubled, and raised to floor.
func bufSize(n int, priv bool, sysMax, floor int) int {
	v := int32(n)
	if priv {
		v = max(v, 0)
	} else if uint32(v) > uint32(sysMax) {
		v = int32(sysMax)
	}
	v = min(v, math.MaxInt32/2)
	return max(int(v)*2, floor)
}

// WriteBuffer returns the send buffer size (SO_SNDBUF).
func (s *socket) WriteBuffer() (int, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	return s.sndbuf, nil
}

// SetNoENOBUFS sets NETLINK_NO_ENOBUFS: drops are no longer reported and
// no longer congest the socket.
func (s *socket) SetNoENOBUFS(on bool) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.noENOBUFS = on
	return nil
}

// NoENOBUFS returns what SetNoENOBUFS (or Config.NoENOBUFS at Dial) set,
// as getsockopt(NETLINK_NO_ENOBUFS) does.
func (s *socket) NoENOBUFS() (bool, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if s.closed {
		return false, os.ErrClosed
	}
	return s.noENOBUFS, nil
}

// A ring is a socket's receive queue. Slots keep their buffers when popped,
// so a steady flow of datagrams allocates nothing.
type ring struct {
	s       []slot
	head, n int
}

type slot struct {
	buf          []byte
	port, groups uint32
	charge       int // the datagram's truesize
}

func (r *ring) push(p []byte, port, groups uint32, charge int) {
	if r.n == len(r.s) {
		grown := make([]slot, max(8, 2*len(r.s)))
		for i := range r.n {
			grown[i] = r.s[(r.head+i)%len(r.s)]
		}
		r.s, r.head = grown, 0
	}
	sl := &r.s[(r.head+r.n)%len(r.s)]
	sl.buf = append(sl.buf[:0], p...)
	sl.port, sl.groups, sl.charge = port, groups, charge
	r.n++
}

func (r *ring) front() *slot { return &r.s[r.head] }

func (r *ring) pop() {
	r.head = (r.head + 1) % len(r.s)
	r.n--
}
