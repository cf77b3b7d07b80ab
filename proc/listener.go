package proc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cnlink/connector"
)

// A Listener receives process events from the kernel.
//
// [Listener.Next] and [Listener.Events] are not safe for concurrent use: one
// goroutine reads. Close, Flush, Stats, Mode, Kinds, Drops, SetReadBuffer,
// ReadBuffer and SetDeadline are safe to call from any goroutine; Close and
// Flush unblock a pending Next.
//
// A Listener reads the socket's NETLINK_NO_ENOBUFS once, when it starts:
// turning it on afterwards (connector.Conn.SetNoENOBUFS) is not seen, and
// drops then go uncounted until a gap shows them, or for good with
// ModeKernelFilter (see Config.NoENOBUFS).
type Listener struct {
	c    *connector.Conn
	r    *connector.Reader
	mode Mode
	// kinds is the user-space filter; all is true when it selects all.
	kinds Kind
	all   bool

	loss lossCounter

	// early holds what the handshake read before its acknowledgement,
	// delivered before anything the Reader reads; earlyLost counts the
	// messages past what it kept (see handshake.early).
	early     []earlyMsg
	earlyLost uint64
	earlySkip map[uint32]uint32
	// ownAcks counts the handshake's own acknowledgements that receive
	// has returned from early and Next has not yet skipped.
	ownAcks int

	// pend is a message whose gap was reported with a KindLost record and
	// that Next delivers on its next call. It aliases the Reader's buffer,
	// which stays valid until the Reader's next call.
	pend    connector.Message
	hasPend bool

	// held is the error that ended a wait, returned by the next call
	// because this one returned the KindLost record of the drops pending
	// then (see receive).
	held error

	// flushDebt is set when a cancelled Events iteration left a Flush
	// that no Next consumed; the reading goroutine clears it.
	flushDebt bool

	// sub is what the subscription set, for Rearm.
	sub subscription

	listened  bool // a LISTEN succeeded: Close sends IGNORE
	claimed   bool // NewListener recorded the Conn (claimConn)
	closed    atomic.Bool
	closeOnce sync.Once

	events, filtered, unknown, acks, lost, overruns, ooo, malformed, foreign, unread atomic.Uint64
}

// Listen opens a connector socket and subscribes to process events on it:
// it is connector.Dial with the configuration a Listener needs (group 1,
// connector.SendersKernelOnly, MessageBufferSize, and Config's
// ReadBufferSize, NoENOBUFS, BatchSize, KernelWait, RawWait and NetNS)
// followed by NewListener.
// The Listener owns the socket: Close closes it.
//
// Before it opens the socket it checks, on evidence the kernel gives (see
// ErrNamespace), that this process is in the initial user and PID
// namespaces, where the kernel answers subscriptions, and that the kernel
// has process events.
//
// It subscribes by sending the request to the kernel (never to the group,
// which would need CAP_NET_ADMIN and disturb other listeners) and waiting
// for the kernel's acknowledgement, which it matches on a random nonce
// (connector.Call). It first subscribes to everything, which the kernel
// acknowledges, and then sets the kernel's filter (Linux 6.6 and later),
// which the kernel does not acknowledge; a kernel older than 6.6 ignores the
// first request, and Listen falls back to the classic request (see Mode).
// The kernel's version (uname) decides where it can: where it says 6.6 or
// later, an acknowledgement that does not come within Config.AckTimeout
// does not make Listen fall back (the request is sent again, without a
// wait); where it says older, the classic request goes out right after the
// first one, and the first one's acknowledgement, which a vendor kernel
// with the filter sends, arrives before the classic one's: nothing waits
// for an acknowledgement that never comes.
//
// Errors match, with errors.Is: connector.ErrInvalidConfig for a Config
// field out of range (negative sizes or timeout, BatchSize above
// connector.MaxBatchSize) or NoENOBUFS with a subset of Kinds and without
// ExactLoss, which would lose events uncounted (see Config.NoENOBUFS); connector.ErrNotInitialNetNS outside the
// initial network namespace; ErrNamespace outside the initial user or PID
// namespace; ErrNoProcEvents on a kernel without CONFIG_PROC_EVENTS;
// os.ErrPermission when the kernel refuses the request (before Linux 6.6,
// subscribing needs CAP_NET_ADMIN); ErrNoAck when no acknowledgement came
// for another reason; connector.ErrNotSupported on systems other than Linux.
//
// The event stream starts with what the socket receives once it has joined
// group 1: while any process listens, the kernel sends events before it
// acknowledges the subscription, and the Listener delivers those first, in
// order (up to 65536 of them; more are one KindLost record with their
// count). An overrun while subscribing is a KindLost record too. Events
// from before Listen are never reported (list the running processes with
// Snapshot).
func Listen(cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		return nil, wrapErr("listen", err)
	}
	if err := namespaceCheck(); err != nil {
		return nil, wrapErr("listen", err)
	}
	if err := checkProcEvents(); err != nil {
		return nil, wrapErr("listen", err)
	}
	batch := cfg.BatchSize
	if batch <= 0 {
		batch = DefaultListenBatchSize
	}
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		ReadBufferSize:    cfg.ReadBufferSize,
		NoENOBUFS:         cfg.NoENOBUFS,
		NetNS:             cfg.NetNS,
		MessageBufferSize: MessageBufferSize,
		BatchSize:         batch,
		Senders:           connector.SendersKernelOnly,
		KernelWait:        cfg.KernelWait,
		RawWait:           cfg.RawWait,
	})
	if err != nil {
		return nil, wrapErr("listen", err)
	}
	l, err := newListener(c, cfg, false)
	if err != nil {
		_ = c.Close()
		return nil, wrapErr("listen", err)
	}
	return l, nil
}

// NewListener subscribes to process events on c, a Conn the caller opened:
// with connector.Dial, or on a fake kernel (cntest, with package proctest
// as the process events agent) in unit tests. The Listener takes c over: it
// reads every message c receives, and Close closes c. A second NewListener
// on the same c fails with an error matching ErrConnInUse. On error c is
// left open.
//
// NewListener checks that c can carry process events and says exactly what
// is wrong otherwise: c must be open; its MessageBufferSize at least
// MinMessageBufferSize; and its sender policy must not be
// connector.SendersAny, which would let a local process with CAP_NET_ADMIN
// forge process events. If c is not yet a member of group 1 it joins it
// (without CAP_NET_ADMIN this needs Linux 6.6 or later). Config's
// ReadBufferSize and NoENOBUFS are applied to c; NETLINK_NO_ENOBUFS already
// on c counts as Config.NoENOBUFS (it reads the socket's state with
// connector.Conn.NoENOBUFS, so a Conn.SetNoENOBUFS after Dial is seen), and
// turning it on after NewListener is not seen (see Config.NoENOBUFS for
// what is then lost from the count). Config's BatchSize,
// KernelWait, RawWait and NetNS belong to Listen, which opens the socket,
// and are refused here.
// Messages from senders other than the kernel are dropped whatever c's
// policy (Stats.Foreign).
//
// Then it subscribes as Listen describes, with the same errors.
func NewListener(c *connector.Conn, cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if c == nil {
		return nil, errors.New("proc: new listener: the *connector.Conn is nil: give it an open Conn (connector.Dial, or a cntest Kernel's Dial)")
	}
	if err := cfg.check(); err != nil {
		return nil, wrapErr("new listener", err)
	}
	if set := listenOnly(cfg); len(set) > 0 {
		verb, obj := "configures", "it"
		if len(set) > 1 {
			verb, obj = "configure", "them"
		}
		names := strings.Join(set[:len(set)-1], ", ")
		if names != "" {
			names += " and "
		}
		names += set[len(set)-1]
		return nil, fmt.Errorf("proc: new listener: %s %s the socket Listen opens; set %s in the connector.Config of the Conn instead", names, verb, obj)
	}
	on, err := socketNoENOBUFS(c)
	if err != nil && !errors.Is(err, connector.ErrClosed) {
		return nil, wrapErr("new listener", err)
	} // a closed Conn: checkConn says so
	if on && !cfg.NoENOBUFS {
		what := "the Conn's connector.Config.NoENOBUFS"
		if !c.Config().NoENOBUFS {
			what = "the Conn's NETLINK_NO_ENOBUFS (Conn.SetNoENOBUFS after Dial)"
		}
		if err := cfg.checkNoENOBUFS(what); err != nil {
			return nil, wrapErr("new listener", err)
		}
	}
	if !claimConn(c) {
		return nil, fmt.Errorf("proc: new listener: %w", ErrConnInUse)
	}
	l, err := newListener(c, cfg, true)
	if err != nil {
		releaseConn(c)
		return nil, wrapErr("new listener", err)
	}
	l.claimed = true
	return l, nil
}

// listenOnly names the Config fields that only Listen uses and that cfg
// sets.
func listenOnly(cfg *Config) []string {
	var set []string
	if cfg.NetNS != 0 {
		set = append(set, "Config.NetNS")
	}
	if cfg.BatchSize != 0 {
		set = append(set, "Config.BatchSize")
	}
	if cfg.KernelWait {
		set = append(set, "Config.KernelWait")
	}
	if cfg.RawWait {
		set = append(set, "Config.RawWait")
	}
	return set
}

// listened holds the Conns that a Listener made by NewListener has taken
// over, until it closes.
var listened struct {
	mu    sync.Mutex
	conns map[*connector.Conn]struct{}
}

// claimConn records that a Listener takes c over; it reports false if one
// already has.
func claimConn(c *connector.Conn) bool {
	listened.mu.Lock()
	defer listened.mu.Unlock()
	if _, ok := listened.conns[c]; ok {
		return false
	}
	if listened.conns == nil {
		listened.conns = make(map[*connector.Conn]struct{})
	}
	listened.conns[c] = struct{}{}
	return true
}

func releaseConn(c *connector.Conn) {
	listened.mu.Lock()
	defer listened.mu.Unlock()
	delete(listened.conns, c)
}

// newListener checks c, applies cfg's socket options if apply is set (Listen
// has applied them through connector.Config) and subscribes.
func newListener(c *connector.Conn, cfg *Config, apply bool) (*Listener, error) {
	if err := checkConn(c); err != nil {
		return nil, err
	}
	if apply && cfg.ReadBufferSize > 0 {
		if err := c.SetReadBuffer(cfg.ReadBufferSize); err != nil {
			return nil, err
		}
	}
	if apply && cfg.NoENOBUFS {
		if err := c.SetNoENOBUFS(true); err != nil {
			return nil, err
		}
	}
	// Read before subscribing, so that an error leaves nothing to undo.
	silent, err := socketNoENOBUFS(c)
	if err != nil {
		return nil, err
	}
	l := &Listener{c: c}
	l.kinds, l.all = userFilter(cfg.Kinds)
	timeout := cfg.AckTimeout
	if timeout <= 0 {
		timeout = DefaultAckTimeout
	}
	h := handshake{c: c, timeout: timeout, noted: c.Stats().Overruns}
	res, err := h.subscribe(l.kinds, l.all, cfg.ExactLoss)
	l.acks.Store(h.acks)
	l.overruns.Store(h.overruns)
	if err != nil {
		return nil, err
	}
	l.mode, l.listened, l.sub = res.mode, true, res
	l.early, l.earlyLost, l.earlySkip = h.early, h.excess, h.skipped
	l.loss.init(c, res.mode, res.exact, cfg.NoENOBUFS || silent)
	if h.overruns > 0 {
		// The socket may still be congested, dropping without a report.
		l.loss.overrun()
	}
	l.r = c.NewReader()
	return l, nil
}

// socketNoENOBUFS reports whether c's socket has NETLINK_NO_ENOBUFS on, as
// the socket says now (connector.Conn.NoENOBUFS, which sees a
// Conn.SetNoENOBUFS after Dial), or, where the Conn cannot read the option
// back (connector.ErrNotSupported), as its Dial-time Config says.
func socketNoENOBUFS(c *connector.Conn) (bool, error) {
	on, err := c.NoENOBUFS()
	if errors.Is(err, connector.ErrNotSupported) {
		return c.Config().NoENOBUFS, nil
	}
	return on, err
}

// checkConn checks that c can carry process events, joining group 1 if
// needed.
func checkConn(c *connector.Conn) error {
	cc := c.Config()
	if cc.MessageBufferSize < MinMessageBufferSize {
		return fmt.Errorf("the Conn's MessageBufferSize of %d bytes cannot hold a process event datagram: dial it with at least %d (proc.MinMessageBufferSize), or %d (proc.MessageBufferSize)", cc.MessageBufferSize, MinMessageBufferSize, MessageBufferSize)
	}
	if cc.Senders == connector.SendersAny {
		return errors.New("the Conn accepts userspace senders on the kernel's groups (connector.Config.Senders is SendersAny), so a local process could forge process events: dial it with SendersKernelOnly or SendersDefault")
	}
	groups, err := c.Groups()
	if errors.Is(err, connector.ErrClosed) {
		return &opError{msg: "the Conn is closed: it must be open", err: err}
	}
	if err != nil {
		return err
	}
	g := connector.IDProc.Group()
	for _, have := range groups {
		if have == g {
			return nil
		}
	}
	if err := c.JoinGroup(g); err != nil {
		return fmt.Errorf("the Conn is not a member of group 1, where the kernel sends process events, and joining it failed: %w", err)
	}
	return nil
}

// wrapErr gives err the one "proc: op: " prefix of the package's errors,
// unless it has it already. An error of package connector loses its own
// "connector: " prefix in the text, and keeps its operation when that is
// not op ("proc: new listener: set read buffer: ..."); the error still
// unwraps to it, so errors.Is and errors.As see everything they did.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	if strings.HasPrefix(s, "proc: ") {
		return err
	}
	return &opError{msg: procText(op, s), err: err}
}

// procText is the text of a connector error's text s, given proc's prefix
// instead of connector's.
func procText(op, s string) string {
	return "proc: " + op + ": " + strings.TrimPrefix(strings.TrimPrefix(s, "connector: "), op+": ")
}

// bare returns err's text without the "connector: op: " prefix of a
// connector.OpError, for a text that says the same in its own words.
func bare(err error) string {
	var oe *connector.OpError
	if errors.As(err, &oe) {
		if s := err.Error(); strings.HasPrefix(s, oe.Error()) {
			return oe.Err.Error() + s[len(oe.Error()):]
		}
	}
	return err.Error()
}

// An opError is an error with the text the package writes for it, that
// unwraps to the error it reports. With msg empty, the text is err's, with
// proc's prefix for op, written only when asked for: a receive error (a
// Flush, a deadline) costs no formatting on the read path.
type opError struct {
	msg string
	op  string
	err error
}

func (e *opError) Error() string {
	if e.msg == "" {
		return procText(e.op, e.err.Error())
	}
	return e.msg
}

func (e *opError) Unwrap() error { return e.err }

// Timeout reports whether the error is a deadline expiry, as
// connector.OpError's does, for callers that test for net.Error.
func (e *opError) Timeout() bool { return errors.Is(e.err, os.ErrDeadlineExceeded) }

// noAgentError reports, on a Conn that can tell (see connector.Conn.Agents),
// that no process events agent is registered: it matches ErrNoProcEvents
// and unwraps to connector's error, which says what is missing once, with
// no claim about /proc/net/connector (a fake kernel has none).
type noAgentError struct{ err error }

func (e *noAgentError) Error() string        { return bare(e.err) }
func (e *noAgentError) Unwrap() error        { return e.err }
func (e *noAgentError) Is(target error) bool { return target == ErrNoProcEvents }

// Mode returns how the Listener filters events.
func (l *Listener) Mode() Mode { return l.mode }

// Kinds returns the kinds the Listener delivers (KindAll for all).
func (l *Listener) Kinds() Kind { return l.kinds }

// Flush wakes a pending [Listener.Next] (or the [Listener.Events]
// iteration): it returns the events still queued in the socket without
// blocking, then an error matching connector.ErrFlushed once the queue is
// empty; calls after that block again. Use it to make the reader return
// promptly without closing the Listener. See connector.Conn.Flush.
func (l *Listener) Flush() error { return wrapErr("flush", l.c.Flush()) }

// SetDeadline sets the deadline for Next (and Events): a wait past it fails
// with an error matching os.ErrDeadlineExceeded. The zero time removes it.
func (l *Listener) SetDeadline(t time.Time) error {
	return wrapErr("set deadline", l.c.SetReadDeadline(t))
}

// SetReadBuffer sets the socket's receive buffer in bytes, for example to
// grow it after an overrun. See Config.ReadBufferSize.
func (l *Listener) SetReadBuffer(bytes int) error {
	return wrapErr("set read buffer", l.c.SetReadBuffer(bytes))
}

// ReadBuffer returns the socket's receive buffer size as the kernel reports
// it (twice the size set: the kernel counts its bookkeeping too).
func (l *Listener) ReadBuffer() (int, error) {
	n, err := l.c.ReadBuffer()
	return n, wrapErr("read buffer", err)
}

// Drops returns the kernel's count of messages dropped because this
// Listener's receive buffer was full: the Conn's drop counter
// ([connector.Conn.Drops]: sk_drops, read from the socket itself with
// SO_MEMINFO, Linux 4.7 and later), so it is right in any namespace; on a
// cntest Conn, the fake kernel's count under the same rules. It counts
// losses in every mode, including ModeKernelFilter where sequence gaps
// cannot, but only as a total since the socket was opened. After Close it
// fails with an error matching connector.ErrClosed.
//
// Its relation to Stats.Lost, the sum of the KindLost counts delivered:
// without Config.ExactLoss those counts come from this counter, so the
// part of Stats.Lost that is not the subscription's read-ahead excess (see
// Listen) never exceeds Drops less its value at subscription, and equals
// it once a wait has ended (see Next) with no drop since. With ExactLoss
// they come from sequence gaps, which also hold the events the kernel lost
// before any socket: Stats.Lost is then at least that difference after a
// wait ends. A drop is never counted twice.
func (l *Listener) Drops() (uint64, error) {
	if l.closed.Load() {
		return 0, fmt.Errorf("proc: drops: %w", connector.ErrClosed)
	}
	n, err := l.c.Drops()
	if err != nil {
		return 0, wrapErr("drops", err)
	}
	return n, nil
}

// Stats returns the Listener's counters.
func (l *Listener) Stats() Stats {
	return Stats{
		Events:     l.events.Load(),
		Filtered:   l.filtered.Load(),
		Unknown:    l.unknown.Load(),
		Acks:       l.acks.Load(),
		Lost:       l.lost.Load(),
		Overruns:   l.overruns.Load(),
		OutOfOrder: l.ooo.Load(),
		Malformed:  l.malformed.Load(),
		Foreign:    l.foreign.Load(),
		Unread:     l.unread.Load(),
		Conn:       l.c.Stats(),
	}
}

// Close unsubscribes (it sends IGNORE to the kernel, once, and does not wait
// for a reply) and closes the socket. A pending Next returns an error
// matching connector.ErrClosed, as do later calls, and a second Close.
// What the Listener had received and not yet returned is counted in
// Stats.Unread and Stats.Conn.Unread by the first Next after Close; to read
// it instead, Flush and read until connector.ErrFlushed before closing.
// Other listeners, in this process or others, are not affected.
func (l *Listener) Close() error {
	err := fmt.Errorf("proc: close: %w", connector.ErrClosed)
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		if l.listened {
			_ = l.c.Send(requestMessage(opIgnore, 0, false, nonce()))
		}
		err = nil
		if cerr := l.c.Close(); cerr != nil {
			err = wrapErr("close", cerr)
		}
		if l.claimed {
			releaseConn(l.c)
		}
	})
	return err
}
