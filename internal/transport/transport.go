// Package transport is the seam between package connector and what carries
// its datagrams: a real NETLINK_CONNECTOR socket, or the cntest fake kernel.
package transport

import "time"

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

// A Batch is a set of receive buffers filled by one Recv call. Sys holds
// transport-specific state (preset recvmmsg headers, say) that the transport
// builds on first use and keeps with the batch, so that steady-state receives
// allocate nothing.
type Batch struct {
	Bufs [][]byte
	Meta []Meta
	Sys  any
}

// NewBatch returns a batch of n buffers of size bytes each.
func NewBatch(n, size int) *Batch {
	b := &Batch{Bufs: make([][]byte, n), Meta: make([]Meta, n)}
	mem := make([]byte, n*size)
	for i := range b.Bufs {
		b.Bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return b
}

// A Transport carries connector datagrams. Its methods return raw system
// errors (syscall.Errno); package connector maps them.
type Transport interface {
	// Recv fills up to len(b.Bufs) datagrams and returns how many. If
	// none is queued it blocks until one arrives, the read deadline
	// expires or the transport is closed; with block false it returns
	// EAGAIN instead, whatever the deadline.
	Recv(b *Batch, block bool) (int, error)
	// Send sends one datagram to the port id and group bitmask given.
	Send(p []byte, port, groups uint32) error
	Join(group uint32) error
	Leave(group uint32) error
	// Memberships returns the joined groups as a bitmask.
	Memberships() (uint32, error)
	PortID() uint32
	// SetReadDeadline sets the deadline of blocking receives, including
	// one already blocked, which it wakes if the deadline has passed.
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline sets the deadline of sends.
	SetWriteDeadline(t time.Time) error
	Close() error
}

// NewConn is set by package connector: it wraps a Transport in a
// *connector.Conn (returned as any to avoid an import cycle). cfg is a
// *connector.Config.
var NewConn func(t Transport, cfg any) (any, error)
