// Package transport is the seam between package connector and what carries
// its datagrams: a real NETLINK_CONNECTOR socket (package connector's
// conn_linux.go) or the cntest fake kernel.
//
// Every method of Transport is required. A transport returns bare errors:
// a syscall.Errno from the kernel (or the errno the fake kernel would give),
// os.ErrClosed after Close, os.ErrDeadlineExceeded past a deadline, and
// ErrUnsupported for what it does not model. Package connector writes every
// message the user reads, once.
package transport

import (
	"errors"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
)

// ErrUnsupported is returned by a transport for an operation it does not
// model (the fake kernel has no BPF and no file descriptor).
var ErrUnsupported = errors.New("not supported by this transport")

// Meta describes one received datagram.
type Meta struct {
	// N is the datagram's full length. When Trunc is set it is larger than
	// the buffer, and only the buffer's worth of bytes arrived.
	N int
	// Port is the sender's netlink port id (0 = the kernel).
	Port uint32
	// Groups is the sender address's group bitmask: bit g-1 for a multicast
	// on group g, 0 for unicast.
	Groups uint32
	// Trunc reports that the datagram did not fit in its buffer.
	Trunc bool
}

// A Batch is a set of receive buffers filled by one Recv call.
type Batch struct {
	Bufs [][]byte
	Meta []Meta
	// Mmsg is the socket transport's state for this batch: recvmmsg
	// headers preset to point at Bufs, built on the first receive, so
	// that later receives allocate nothing. Other transports leave it
	// alone.
	Mmsg Mmsg
}

// NewBatch returns a batch of n buffers of size bytes each, in one
// allocation. The caller has checked n and size.
func NewBatch(n, size int) *Batch {
	b := &Batch{Bufs: make([][]byte, n), Meta: make([]Meta, n)}
	mem := make([]byte, n*size)
	for i := range b.Bufs {
		b.Bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return b
}

// A Transport carries connector datagrams for one socket.
type Transport interface {
	// PortID returns the socket's netlink port id.
	PortID() uint32

	// Recv fills up to len(b.Bufs) datagrams and returns how many. If
	// none is queued it blocks until one arrives, the read deadline
	// passes (os.ErrDeadlineExceeded) or the transport is closed; with
	// block false it returns EAGAIN instead, whatever the deadline. A
	// pending overrun is returned as ENOBUFS before any datagram.
	Recv(b *Batch, block bool) (int, error)

	// Send sends one datagram to the port id and group bitmask given,
	// without waiting: a full unicast receiver gives EAGAIN.
	Send(p []byte, port, groups uint32) error
	// SendWait is Send that waits a short while (about 10 ms) for room
	// in a full unicast receiver before it gives EAGAIN, so that the
	// caller can check Close and its deadline between waits.
	SendWait(p []byte, port, groups uint32) error

	// Join and Leave change the socket's membership of a group (by
	// number, NETLINK_ADD_MEMBERSHIP/NETLINK_DROP_MEMBERSHIP).
	Join(group uint32) error
	Leave(group uint32) error
	// Memberships returns the joined groups as a bitmask
	// (NETLINK_LIST_MEMBERSHIPS).
	Memberships() (uint32, error)

	// SetReadDeadline sets the deadline of blocking receives, including
	// one already blocked, which it wakes if the deadline has passed.
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline sets the deadline of sends.
	SetWriteDeadline(t time.Time) error

	// SetReadBuffer and SetWriteBuffer set SO_RCVBUF and SO_SNDBUF (forced
	// where the socket may), with the kernel's arithmetic; the caller has
	// checked that bytes fits a C int. ReadBuffer and WriteBuffer read
	// them back.
	SetReadBuffer(bytes int) error
	ReadBuffer() (int, error)
	SetWriteBuffer(bytes int) error
	WriteBuffer() (int, error)
	// SetNoENOBUFS sets NETLINK_NO_ENOBUFS; NoENOBUFS reads it back.
	SetNoENOBUFS(on bool) error
	NoENOBUFS() (bool, error)
	// SetBPF attaches a classic BPF socket filter; an empty filter
	// detaches the current one. The caller has checked the length.
	SetBPF(filter []bpf.RawInstruction) error
	// Drops returns the socket's drop counter (sk_drops): how many
	// datagrams were dropped for it since it was opened because its
	// receive queue was full or congested (netlink_overrun). Datagrams a
	// socket filter rejects are not counted.
	Drops() (uint64, error)
	// SyscallConn returns the socket's file descriptor.
	SyscallConn() (syscall.RawConn, error)

	// AgentTable returns the kernel agents that datagrams to port 0
	// reach, in the format of /proc/net/connector.
	AgentTable() ([]byte, error)

	// Close closes the socket and wakes blocked receives.
	Close() error
}

// NewConn is set by package connector: it opens a *connector.Conn (returned
// as any to avoid an import cycle) as connector.Dial does, with open in
// place of opening a socket. cfg is a *connector.Config; the Conn checks it,
// then calls open with the bitmask of its groups. Errors of open are bare,
// or *os.SyscallError values naming the step (bind) that failed.
var NewConn func(open func(groups uint32) (Transport, error), cfg any) (any, error)
