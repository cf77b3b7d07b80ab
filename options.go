package connector

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
)

type bufferSetter interface {
	SetReadBuffer(int) error
	ReadBuffer() (int, error)
	SetWriteBuffer(int) error
	WriteBuffer() (int, error)
}

type bpfSetter interface {
	SetBPF([]bpf.RawInstruction) error
	RemoveBPF() error
}

type enobufsSetter interface{ SetNoENOBUFS(bool) error }

type syscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

func notSupported(op string) error {
	return &OpError{Op: op, Err: fmt.Errorf("%w by this connection", ErrNotSupported)}
}

// SetReadBuffer sets the socket's receive buffer in bytes, 0 to
// MaxBufferSize (ErrInvalidConfig otherwise). The kernel keeps twice the
// size (at most INT_MAX/2 doubled, at least 2304 bytes). With CAP_NET_ADMIN
// the size may exceed net.core.rmem_max (SO_RCVBUFFORCE); without it the
// kernel caps the size at rmem_max silently. Read the result back with
// ReadBuffer.
func (c *Conn) SetReadBuffer(bytes int) error {
	if err := c.checkOpen("set read buffer"); err != nil {
		return err
	}
	if err := checkBufferSize("the read buffer size", bytes); err != nil {
		return opErr("set read buffer", err)
	}
	s, ok := c.t.(bufferSetter)
	if !ok {
		return notSupported("set read buffer")
	}
	return opErr("set read buffer", c.mapErr(s.SetReadBuffer(bytes), "set read buffer"))
}

// ReadBuffer returns the socket's receive buffer size as the kernel reports
// it (twice the requested size: the kernel counts its bookkeeping too).
func (c *Conn) ReadBuffer() (int, error) {
	if err := c.checkOpen("read buffer"); err != nil {
		return 0, err
	}
	s, ok := c.t.(bufferSetter)
	if !ok {
		return 0, notSupported("read buffer")
	}
	n, err := s.ReadBuffer()
	return n, opErr("read buffer", c.mapErr(err, "read buffer"))
}

// SetWriteBuffer sets the socket's send buffer in bytes, 0 to MaxBufferSize
// (ErrInvalidConfig otherwise), with the kernel's arithmetic of
// SetReadBuffer: doubled, at least 4608 bytes, capped at net.core.wmem_max
// without CAP_NET_ADMIN (SO_SNDBUFFORCE with it). A datagram larger than
// the send buffer fails with EMSGSIZE.
func (c *Conn) SetWriteBuffer(bytes int) error {
	if err := c.checkOpen("set write buffer"); err != nil {
		return err
	}
	if err := checkBufferSize("the write buffer size", bytes); err != nil {
		return opErr("set write buffer", err)
	}
	s, ok := c.t.(bufferSetter)
	if !ok {
		return notSupported("set write buffer")
	}
	return opErr("set write buffer", c.mapErr(s.SetWriteBuffer(bytes), "set write buffer"))
}

// WriteBuffer returns the socket's send buffer size as the kernel reports it.
func (c *Conn) WriteBuffer() (int, error) {
	if err := c.checkOpen("write buffer"); err != nil {
		return 0, err
	}
	s, ok := c.t.(bufferSetter)
	if !ok {
		return 0, notSupported("write buffer")
	}
	n, err := s.WriteBuffer()
	return n, opErr("write buffer", c.mapErr(err, "write buffer"))
}

// SetNoENOBUFS turns NETLINK_NO_ENOBUFS on or off (see Config.NoENOBUFS).
func (c *Conn) SetNoENOBUFS(on bool) error {
	if err := c.checkOpen("set NETLINK_NO_ENOBUFS"); err != nil {
		return err
	}
	s, ok := c.t.(enobufsSetter)
	if !ok {
		return notSupported("set NETLINK_NO_ENOBUFS")
	}
	return opErr("set NETLINK_NO_ENOBUFS", c.mapErr(s.SetNoENOBUFS(on), "set NETLINK_NO_ENOBUFS"))
}

// SetBPF attaches a classic BPF socket filter (SO_ATTACH_FILTER), replacing
// any earlier one; an empty filter detaches it, as RemoveBPF does. Build the
// program with golang.org/x/net/bpf: the output of bpf.Assemble fits. The
// kernel runs it on every datagram before queueing it; a filter that returns
// 0 drops the datagram. Offsets count from the start of the netlink header:
// the cn_msg header starts at 16 and the payload at 36. Loads are
// big-endian while connector fields are in host byte order. A program has at
// most 4096 instructions (BPF_MAXINSNS); the kernel checks the rest and
// fails with EINVAL.
func (c *Conn) SetBPF(filter []bpf.RawInstruction) error {
	if err := c.checkOpen("set BPF filter"); err != nil {
		return err
	}
	s, ok := c.t.(bpfSetter)
	if !ok {
		return notSupported("set BPF filter")
	}
	return opErr("set BPF filter", c.mapErr(s.SetBPF(filter), "set BPF filter"))
}

// RemoveBPF detaches the socket filter.
func (c *Conn) RemoveBPF() error {
	if err := c.checkOpen("remove BPF filter"); err != nil {
		return err
	}
	s, ok := c.t.(bpfSetter)
	if !ok {
		return notSupported("remove BPF filter")
	}
	return opErr("remove BPF filter", c.mapErr(s.RemoveBPF(), "remove BPF filter"))
}

// SyscallConn returns the raw socket, for options this package does not
// cover. Reading from it directly bypasses the Conn's checks and counters.
//
// The runtime poller watches the socket, but the socket itself is in
// blocking mode, so that a send to a full unicast receiver can wait in the
// kernel. The Conn passes MSG_DONTWAIT to every other call; do the same in
// system calls that must not block, or Close waits until they return.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if err := c.checkOpen("syscall conn"); err != nil {
		return nil, err
	}
	s, ok := c.t.(syscallConner)
	if !ok {
		return nil, notSupported("syscall conn")
	}
	rc, err := s.SyscallConn()
	return rc, opErr("syscall conn", err)
}

// SetDeadline sets the read and write deadlines (see SetReadDeadline and
// SetWriteDeadline).
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetWriteDeadline sets the deadline for sends. Only a unicast to a
// userspace socket whose receive buffer is full ever waits (sends to the
// kernel and multicasts never do); such a send notices the deadline, or
// Close, within about 10 ms.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if err := c.checkOpen("set write deadline"); err != nil {
		return err
	}
	if t.IsZero() {
		c.wdeadline.Store(0)
	} else {
		c.wdeadline.Store(t.UnixNano())
	}
	return opErr("set write deadline", c.mapErr(c.t.SetWriteDeadline(t), "set write deadline"))
}
