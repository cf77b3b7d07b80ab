package proc

import (
	"fmt"
	"time"

	"github.com/cnlink/connector"
)

// Defaults for Config fields left zero.
const (
	// DefaultAckTimeout is how long a subscription waits for each
	// acknowledgement. The kernel acknowledges within the sending system
	// call, so the wait only ends by timeout when the kernel ignores the
	// request (a sender outside the initial namespaces) or the
	// acknowledgement is queued behind a great many messages.
	DefaultAckTimeout = time.Second
	// DefaultListenBatchSize is how many datagrams one receive system call
	// fetches on the socket Listen opens (connector.Config.BatchSize);
	// larger than the package connector's DefaultBatchSize, because process
	// events come in bursts.
	DefaultListenBatchSize = 64
)

// MessageBufferSize is the connector.Config.MessageBufferSize Listen uses:
// a cn_proc datagram is 76 bytes (MinMessageBufferSize); the rest leaves
// room for a longer proc_event from a future kernel.
const MessageBufferSize = 512

// MinMessageBufferSize is the smallest connector.Config.MessageBufferSize
// NewListener accepts: one netlink header (16 bytes), one cn_msg header (20)
// and one 40-byte struct proc_event.
const MinMessageBufferSize = 16 + connector.HeaderLen + eventLen

// Config configures a Listener. A nil *Config means the zero value: every
// event kind, default buffers.
type Config struct {
	// Kinds selects the event kinds to deliver, as a bitwise OR of Kind
	// values; KindNonzeroExit selects the exits with a nonzero ExitCode. 0
	// or KindAll means every kind. Other bits (KindLost, bits the kernel
	// does not define) are ignored next to a kind: acknowledgements are
	// never delivered and loss records always are. A value with such bits
	// only (KindLost alone, say) selects no kind, and Listen and
	// NewListener refuse it with an error matching
	// connector.ErrInvalidConfig (the kernel would read it as every kind). Events whose kind is not
	// a single kind this package knows (new kernel kinds, several bits at
	// once) are delivered, with Event.Raw, only when every kind is
	// selected.
	//
	// With a subset, the kernel filters (Linux 6.6 and later) or, on older
	// kernels, the Listener filters in user space; [Listener.Mode] says
	// which. Events are always filtered in user space as well.
	Kinds Kind

	// ReadBufferSize is the socket receive buffer in bytes, which bounds
	// how many events the kernel queues before it drops them. Each event
	// is charged its skb truesize, which depends on the kernel's version
	// and configuration (768 bytes before Linux 6.3; 960 on Debian's
	// x86_64 6.12 to 7.3 kernels, 832 where the small-head cache is
	// smaller). 0 keeps net.core.rmem_default (often
	// 212992, room for some 220 to 280 events). See connector.Config.
	ReadBufferSize int

	// NoENOBUFS turns off the kernel's overrun reports (ENOBUFS). The
	// socket then drops events only while its buffer is full, instead of
	// until it has been drained. Loss is still counted, from sequence gaps
	// and the socket's drop counter (see Mode).
	//
	// With a subset of Kinds it needs ExactLoss: the kernel's filter
	// (Linux 6.6 and later) leaves gaps in the sequence numbers, so without
	// overrun reports nothing would say when the drop counter must be read,
	// and events would be lost uncounted. Listen and NewListener refuse
	// the combination (NoENOBUFS here, or NETLINK_NO_ENOBUFS already on
	// the Conn given to NewListener, through connector.Config.NoENOBUFS or
	// Conn.SetNoENOBUFS, which NewListener reads back with
	// Conn.NoENOBUFS, with a subset of Kinds and without ExactLoss) with
	// an error matching connector.ErrInvalidConfig that names the fields.
	// [Listener.Drops] counts in every mode.
	//
	// The Listener reads the option once, when it starts. Turning
	// NETLINK_NO_ENOBUFS on later (Conn.SetNoENOBUFS on the Conn it took
	// over, or setsockopt through Conn.SyscallConn) is not seen: the
	// Listener still waits for an overrun report before it reads the drop
	// counter at the end of a wait, and none comes. Drops are then counted
	// only at the next gap of the CPU that lost the event (with every kind,
	// or ExactLoss), or not at all (a subset of Kinds without ExactLoss,
	// ModeKernelFilter); only [Listener.Drops] still shows them. Set it
	// here or on the Conn before NewListener.
	NoENOBUFS bool

	// ExactLoss makes the Listener count every lost event, also those the
	// kernel loses before any socket sees them: a failed GFP_NOWAIT
	// allocation in the kernel's send path, which no drop counter and no
	// log records (see "Loss" in the package documentation). The socket
	// then takes every message the kernel sends to group 1, every event
	// kind and every process's subscription acknowledgements, so that a
	// gap in a CPU's sequence numbers is lost messages and nothing else.
	// Kinds is applied in user space only: the Mode is ModeAll or
	// ModeUserFilter, never ModeKernelFilter.
	//
	// One case counts too few. The socket's drops that no gap has shown
	// are reported when a wait ends (see Listener.Next), and the gaps
	// that follow are taken to hold them first, so that none is counted
	// twice. Drops of a CPU's events before the Listener received its
	// first message from that CPU never show as a gap, so later gaps are
	// taken to hold them: the kernel's own losses in those gaps go
	// uncounted, at most as many as such early drops.
	//
	// The price: every event crosses into user space, and a local process
	// that floods the kernel with subscription requests fills the socket
	// with acknowledgements, so events are lost to overruns where the
	// default would have kept them out. Those losses are counted too:
	// nothing is lost silently.
	ExactLoss bool

	// BatchSize is how many datagrams one receive system call fetches on
	// the socket Listen opens. 0 means DefaultListenBatchSize. NewListener
	// refuses it: set connector.Config.BatchSize instead.
	BatchSize int

	// AckTimeout bounds each wait for the kernel's acknowledgement. 0 means
	// DefaultAckTimeout. Where the kernel's version (uname) says 6.6 or
	// later, a subscription whose acknowledgement did not come in time
	// goes ahead anyway, since those kernels acknowledge every request from
	// the initial namespaces; where it says older, no wait depends on it
	// (see Listen). On a Conn of a fake kernel, whose version is unknown, a
	// kernel that ignores the filter request costs one AckTimeout.
	AckTimeout time.Duration

	// KernelWait and RawWait are connector.Config.KernelWait and
	// connector.Config.RawWait for the socket Listen opens: the receive
	// waits inside recvmmsg (and, with RawWait, without the scheduler's
	// system call bookkeeping), for the least CPU per event of a Listener
	// that keeps up with a busy machine; see there for the price (Close,
	// Flush and deadlines take effect at the end of a 10 ms wait slice,
	// rounded up to clock ticks; RawWait holds a processor while it
	// waits). RawWait needs KernelWait (Listen fails
	// with connector.ErrInvalidConfig otherwise). NewListener refuses
	// them: dial the Conn with them instead.
	KernelWait, RawWait bool

	// NetNS, if not 0, is a network namespace file descriptor to open
	// Listen's socket in (see connector.Config.NetNS). Process events exist
	// only in the initial network namespace. NewListener refuses it: open
	// the Conn in the namespace instead.
	NetNS int
}

// A Mode says how a Listener filters events.
type Mode int

// Filtering modes.
const (
	// ModeAll: the Listener takes every kind. On Linux 6.6 and later the
	// kernel's filter is set to every event kind, which keeps other
	// processes' subscription acknowledgements out of the socket; before
	// 6.6 a classic BPF socket filter does that, where the socket takes
	// one. Events lost to a full receive buffer are counted exactly (see
	// Event.Lost); events the kernel loses before any socket only with
	// Config.ExactLoss, which keeps no acknowledgement out.
	ModeAll Mode = iota + 1
	// ModeKernelFilter: the kernel filters by kind (struct proc_input,
	// Linux 6.6 and later) and the Listener filters again in user space.
	// The kernel's filter leaves gaps in the sequence numbers, so losses
	// are reported when the kernel reports an overrun, and counted (from
	// the socket's drop counter) only after such a report, until the
	// socket drops no more. Without overrun reports they would go
	// uncounted, so Config.NoENOBUFS is refused with a subset of kinds
	// unless Config.ExactLoss is set (which makes the mode ModeUserFilter).
	// [Listener.Drops] gives the total in every mode.
	ModeKernelFilter
	// ModeUserFilter: the kernel sends every event, because it ignored the
	// filter request (before 6.6) or because Config.ExactLoss asked for
	// every message; the Listener filters in user space. Losses are
	// counted as in ModeAll.
	ModeUserFilter
)

func (m Mode) String() string {
	switch m {
	case ModeAll:
		return "all"
	case ModeKernelFilter:
		return "kernel filter"
	case ModeUserFilter:
		return "user-space filter"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// CountsLoss reports whether a Listener in this mode counts every lost
// event (KindLost records with a Lost count), with or without overrun
// reports, rather than only after an overrun (ModeKernelFilter).
func (m Mode) CountsLoss() bool { return m == ModeAll || m == ModeUserFilter }

// Stats are a Listener's counters since it subscribed.
type Stats struct {
	// Events is the number of events delivered, KindLost records excluded.
	Events uint64
	// Filtered counts events received but not delivered because their kind
	// was not selected (the user-space half of filtering).
	Filtered uint64
	// Unknown counts delivered events of a kind this package does not know
	// (their payload is in Event.Raw).
	Unknown uint64
	// Acks counts acknowledgements received: this Listener's own, and
	// other processes' ones that reached the socket (before the
	// subscription took effect, and after it none where a kernel or socket
	// filter keeps them out; see Mode).
	Acks uint64
	// Lost is the number of events counted as lost, the sum of the
	// delivered KindLost counts.
	Lost uint64
	// Overruns counts receive buffer overruns (ENOBUFS): each lost one or
	// more events.
	Overruns uint64
	// OutOfOrder counts events whose sequence number was not after the
	// previous one from the same CPU (not expected from current kernels).
	OutOfOrder uint64
	// Malformed counts messages that could not be decoded.
	Malformed uint64
	// Foreign counts messages the Listener dropped because they were not
	// process events from the kernel: other connector ids, or userspace
	// senders the Conn's sender policy let through. Messages the Conn
	// itself dropped (userspace senders, under the policy Listen sets) are
	// counted in Conn.Foreign instead.
	Foreign uint64
	// Unread counts messages the Listener received and never returned
	// because it was closed first: those its subscription read ahead of
	// the acknowledgement (kept, or past what it keeps), and one held back
	// behind a KindLost record. Those still in its Reader's batch are in
	// Conn.Unread. Both are counted by the first Next after Close, on the
	// reading goroutine.
	Unread uint64
	// Conn are the underlying connection's counters.
	Conn connector.Stats
}

// check reports a Config field out of range, with an error matching
// connector.ErrInvalidConfig that names it. Sizes that reach the socket
// (ReadBufferSize, BatchSize) are range-checked again by package connector.
func (cfg *Config) check() error {
	switch {
	case cfg.ReadBufferSize < 0:
		return fmt.Errorf("%w: Config.ReadBufferSize is %d; give a size in bytes, or 0 for net.core.rmem_default", connector.ErrInvalidConfig, cfg.ReadBufferSize)
	case cfg.BatchSize < 0 || cfg.BatchSize > connector.MaxBatchSize:
		return fmt.Errorf("%w: Config.BatchSize is %d; it must be 1 to %d, or 0 for DefaultListenBatchSize (%d)", connector.ErrInvalidConfig, cfg.BatchSize, connector.MaxBatchSize, DefaultListenBatchSize)
	case cfg.AckTimeout < 0:
		return fmt.Errorf("%w: Config.AckTimeout is %v; give a positive duration, or 0 for DefaultAckTimeout (%v)", connector.ErrInvalidConfig, cfg.AckTimeout, DefaultAckTimeout)
	case cfg.Kinds != 0 && cfg.Kinds&KindAll == 0:
		return fmt.Errorf("%w: Config.Kinds (%#x, %v) selects no event kind: loss records (KindLost) are always delivered, and bits outside KindAll are ignored; give the kinds to deliver, or 0 for every kind", connector.ErrInvalidConfig, uint32(cfg.Kinds), cfg.Kinds)
	case cfg.NoENOBUFS:
		return cfg.checkNoENOBUFS("Config.NoENOBUFS")
	}
	return nil
}

// checkNoENOBUFS refuses NETLINK_NO_ENOBUFS (set by the field named what)
// with a subset of kinds and without ExactLoss: the kernel's filter leaves
// gaps in the sequence numbers, and with no overrun report nothing tells
// the Listener to read the drop counter, so events would be lost
// uncounted (see ModeKernelFilter).
func (cfg *Config) checkNoENOBUFS(what string) error {
	if _, all := userFilter(cfg.Kinds); all || cfg.ExactLoss {
		return nil
	}
	return fmt.Errorf("%w: Config.Kinds selects %v only and %s is set: the kernel's filter leaves gaps in the sequence numbers and NETLINK_NO_ENOBUFS turns off the overrun reports, so lost events would go uncounted; set Config.ExactLoss too (losses counted from the gaps, kinds filtered in user space), or leave %s off", connector.ErrInvalidConfig, cfg.Kinds&KindAll, what, what)
}
