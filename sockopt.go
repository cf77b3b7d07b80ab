package connector

import (
	"errors"
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

// NoENOBUFS reports whether NETLINK_NO_ENOBUFS is on, as the socket says
// now (getsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS), which
// net/netlink/af_netlink.c's netlink_getsockopt answers with 1 or 0 since
// Linux 2.6.30; option 5 in include/uapi/linux/netlink.h): it sees
// [Conn.SetNoENOBUFS] and [Config.NoENOBUFS] alike, and a change made
// through [Conn.SyscallConn], where [Conn.Config] keeps what Dial was given.
// On a cntest fake it returns what the fake socket recorded.
func (c *Conn) NoENOBUFS() (bool, error) {
	const op = "read NETLINK_NO_ENOBUFS"
	if err := c.checkOpen(op); err != nil {
		return false, err
	}
	on, err := c.t.NoENOBUFS()
	return on, opErr(op, c.mapErr(err, op))
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
// program has at most 4096 instructions (BPF_MAXINSNS); the kernel checks
// the rest (net/core/filter.c, bpf_check_classic). A program either check
// refuses fails with an error matching ErrInvalidConfig and EINVAL that
// says what the kernel checks; one larger than the socket's option memory
// (net.core.optmem_max) with ENOMEM, and every change of a filter locked
// with SO_LOCK_FILTER with an error matching os.ErrPermission that says
// so. Detaching when no filter is attached succeeds.
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
	return opErr(op, c.mapBPFErr(c.t.SetBPF(filter), len(filter), op))
}

// RemoveBPF detaches the socket filter (SO_DETACH_FILTER), as SetBPF(nil)
// does. Without a filter attached there is nothing to do, and it succeeds
// (the kernel's ENOENT is not an error here). A filter locked with
// SO_LOCK_FILTER cannot be removed: the error matches os.ErrPermission.
func (c *Conn) RemoveBPF() error {
	const op = "remove BPF filter"
	if err := c.checkOpen(op); err != nil {
		return err
	}
	return opErr(op, c.mapBPFErr(c.t.SetBPF(nil), 0, op))
}

// mapBPFErr maps the kernel's error of attaching a program of n
// instructions (n > 0) or detaching the filter (n == 0): its errnos mean
// specific things there (net/core/filter.c, sk_attach_filter and
// sk_detach_filter).
func (c *Conn) mapBPFErr(err error, n int, op string) error {
	switch {
	case err == nil:
		return nil
	case n == 0 && errors.Is(err, syscall.ENOENT):
		return nil // no filter was attached: detached already
	case errors.Is(err, syscall.EPERM):
		// Attaching and detaching need no privilege: EPERM is the lock.
		return fmt.Errorf("the socket's filter is locked (SO_LOCK_FILTER was set): it can no longer be replaced or removed on this socket: %w", err)
	case n > 0 && errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("%w: the kernel refused the %d-instruction program as invalid classic BPF (it needs a known opcode in every instruction, jumps that stay inside the program, loads from scratch memory M[0] to M[15] only after a store to it, no division or modulo by a constant 0, and a return as the last instruction): %w", ErrInvalidConfig, n, err)
	case n > 0 && errors.Is(err, syscall.ENOMEM):
		return fmt.Errorf("the %d-instruction program does not fit the socket's option memory (net.core.optmem_max; raise it or shorten the program): %w", n, err)
	}
	return c.mapErr(err, op)
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
