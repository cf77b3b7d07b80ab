package connector

import (
	"fmt"
	"syscall"

	"golang.org/x/net/bpf"
)

// Socket options of a Conn. Each method fails with an error matching
// ErrClosed after Close, and with one matching ErrNotSupported where the
// Conn's transport does not model the option (cntest has no BPF and no file
// descriptor).

// SetReadBuffer sets the socket's receive buffer in bytes, 0 to
// MaxBufferSize (ErrInvalidConfig otherwise). The kernel keeps twice the
// size (at most INT_MAX/2 doubled, at least 2304 bytes). With CAP_NET_ADMIN
// the size may exceed net.core.rmem_max (SO_RCVBUFFORCE); without it the
// kernel caps the size at rmem_max silently. Read the result back with
// [Conn.ReadBuffer].
func (c *Conn) SetReadBuffer(bytes int) error {
	const op = "set read buffer"
	if err := c.checkOpen(op); err != nil {
		return err
	}
	if err := checkBufferSize("the read buffer size", bytes); err != nil {
		return opErr(op, err)
	}
	return opErr(op, c.mapErr(c.t.SetReadBuffer(bytes), op))
}

// ReadBuffer returns the socket's receive buffer size as the kernel reports
// it (twice the requested size: the kernel counts its bookkeeping too).
func (c *Conn) ReadBuffer() (int, error) {
	const op = "read buffer"
	if err := c.checkOpen(op); err != nil {
		return 0, err
	}
	n, err := c.t.ReadBuffer()
	return n, opErr(op, c.mapErr(err, op))
}

// SetWriteBuffer sets the socket's send buffer in bytes, 0 to MaxBufferSize
// (ErrInvalidConfig otherwise), with the kernel's arithmetic of
// [Conn.SetReadBuffer]: doubled, at least 4608 bytes, capped at
// net.core.wmem_max without CAP_NET_ADMIN (SO_SNDBUFFORCE with it). A
// datagram larger than the send buffer fails with EMSGSIZE.
func (c *Conn) SetWriteBuffer(bytes int) error {
	const op = "set write buffer"
	if err := c.checkOpen(op); err != nil {
		return err
	}
	if err := checkBufferSize("the write buffer size", bytes); err != nil {
		return opErr(op, err)
	}
	return opErr(op, c.mapErr(c.t.SetWriteBuffer(bytes), op))
}

// WriteBuffer returns the socket's send buffer size as the kernel reports it.
func (c *Conn) WriteBuffer() (int, error) {
	const op = "write buffer"
	if err := c.checkOpen(op); err != nil {
		return 0, err
	}
	n, err := c.t.WriteBuffer()
	return n, opErr(op, c.mapErr(err, op))
}

// SetNoENOBUFS turns NETLINK_NO_ENOBUFS on or off (see [Config.NoENOBUFS]).
func (c *Conn) SetNoENOBUFS(on bool) error {
	const op = "set NETLINK_NO_ENOBUFS"
	if err := c.checkOpen(op); err != nil {
		return err
	}
	return opErr(op, c.mapErr(c.t.SetNoENOBUFS(on), op))
}

// bpfMaxInsns is BPF_MAXINSNS from include/uapi/linux/bpf_common.h (Linux
// 2.6 and later): the most instructions a classic BPF program may have.
const bpfMaxInsns = 4096

// SetBPF attaches a classic BPF socket filter (SO_ATTACH_FILTER), replacing
// any earlier one; an empty filter detaches it, as [Conn.RemoveBPF] does.
// Build the program with golang.org/x/net/bpf: the output of bpf.Assemble
// fits. The kernel runs it on every datagram before queueing it; a filter
// that returns 0 drops the datagram. Offsets count from the start of the
// netlink header: the cn_msg header starts at 16 and the payload at 36.
// Loads are big-endian while connector fields are in host byte order. A
// program has at most 4096 instructions (BPF_MAXINSNS, ErrInvalidConfig
// otherwise); the kernel checks the rest and fails with EINVAL.
func (c *Conn) SetBPF(filter []bpf.RawInstruction) error {
	const op = "set BPF filter"
	if err := c.checkOpen(op); err != nil {
		return err
	}
	if len(filter) > bpfMaxInsns {
		// The program length is a 16-bit field: a longer program must not
		// reach the kernel cut short.
		return opErr(op, fmt.Errorf("%w: a socket filter may have at most %d instructions (BPF_MAXINSNS), not %d: %w", ErrInvalidConfig, bpfMaxInsns, len(filter), syscall.EINVAL))
	}
	return opErr(op, c.mapErr(c.t.SetBPF(filter), op))
}

// RemoveBPF detaches the socket filter (SO_DETACH_FILTER). Without a filter
// attached the kernel fails with ENOENT.
func (c *Conn) RemoveBPF() error {
	const op = "remove BPF filter"
	if err := c.checkOpen(op); err != nil {
		return err
	}
	return opErr(op, c.mapErr(c.t.SetBPF(nil), op))
}

// SyscallConn returns the raw socket, for options this package does not
// cover. Reading from it directly bypasses the Conn's checks and counters.
//
// The runtime poller watches the socket, but the socket itself is in
// blocking mode, so that a send to a full unicast receiver can wait in the
// kernel. The Conn passes MSG_DONTWAIT to every other call; do the same in
// system calls that must not block, or Close waits until they return.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	const op = "syscall conn"
	if err := c.checkOpen(op); err != nil {
		return nil, err
	}
	rc, err := c.t.SyscallConn()
	return rc, opErr(op, c.mapErr(err, op))
}
