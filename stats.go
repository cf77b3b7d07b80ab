package connector

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cnlink/connector/internal/transport"
)

// Stats are a Conn's receive counters since Dial.
type Stats struct {
	// Datagrams received from the socket, Messages delivered to the caller.
	Datagrams uint64
	Messages  uint64
	// Overruns counts ENOBUFS reports (each is one or more lost messages).
	Overruns uint64
	// Truncated counts datagrams larger than the message buffer.
	Truncated uint64
	// Malformed counts datagrams or messages rejected as invalid.
	Malformed uint64
	// Foreign counts datagrams dropped because their sender was not one
	// that [Config.Senders] accepts.
	Foreign uint64
	// Unclaimed counts messages read but given to nobody by a Call or
	// [Exchange]: those a call read from the socket itself (no [Mux.Serve]
	// running) that no waiting call claimed and no [WithUnmatched] handler
	// took, and replies an Exchange had claimed but not yet handed to its
	// function when it ended.
	Unclaimed uint64
	// Unread counts messages received from the socket into a [Reader]'s
	// batch (their datagrams are in Datagrams) that no call returned: the
	// Reader found the Conn closed ([Reader.Next] after [Conn.Close]) or
	// was released ([Reader.Release]) while they were still in its batch.
	// The Reader counts them in that call, on its own goroutine: read
	// Stats after the reading goroutine has returned. Messages still
	// queued in the socket at Close are not received, and not counted
	// here; [Conn.Flush] reads both before a Close.
	Unread uint64
}

// counters are the live Stats of a Conn, updated by every receive.
type counters struct {
	datagrams, messages, overruns, truncated, malformed, foreign atomic.Uint64

	unclaimed atomic.Uint64 // see Stats.Unclaimed; updated by line.go
	unread    atomic.Uint64 // see Stats.Unread; updated by Reader.discard
}

// Stats returns the receive counters. It is safe to call at any time, from
// any goroutine.
func (c *Conn) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	n := &c.counters
	return Stats{
		Datagrams: n.datagrams.Load(),
		Messages:  n.messages.Load(),
		Overruns:  n.overruns.Load(),
		Truncated: n.truncated.Load(),
		Malformed: n.malformed.Load(),
		Foreign:   n.foreign.Load(),
		Unclaimed: n.unclaimed.Load(),
		Unread:    n.unread.Load(),
	}
}

// Drops returns the socket's drop counter: how many messages the kernel
// dropped for this socket since it was opened because its receive queue was
// full or congested (sk_drops, read with getsockopt SO_MEMINFO, Linux 4.7
// and later; the Drops column of /proc/net/netlink). The kernel counts
// every message lost to an overrun, including those dropped while the
// socket stays congested after the one overrun it reports, and with
// [Config.NoENOBUFS] set; datagrams a socket filter ([Conn.SetBPF])
// rejects are not counted. A cntest socket keeps the same counter under
// the same rules. Drops allocates nothing.
//
// After Close it fails with an error matching ErrClosed; on a kernel
// without the counter in SO_MEMINFO (before 4.7) with one matching
// ErrNotSupported.
func (c *Conn) Drops() (uint64, error) {
	const op = "drops"
	if err := c.checkOpen(op); err != nil {
		return 0, err
	}
	n, err := c.t.Drops()
	if err != nil {
		if errors.Is(err, transport.ErrUnsupported) {
			return 0, &OpError{Op: op, Err: fmt.Errorf("%w: this kernel's SO_MEMINFO has no drop counter (Linux 4.7 and later have it)", ErrNotSupported)}
		}
		return 0, opErr(op, c.mapErr(err, op))
	}
	return n, nil
}
