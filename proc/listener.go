package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnlink/connector"
)

// Defaults for Config fields left zero.
const (
	// DefaultAckTimeout is how long Listen waits for each acknowledgement.
	// The kernel acknowledges within the sending system call, so the wait
	// only ends by timeout on kernels that ignore the request.
	DefaultAckTimeout = time.Second
	// DefaultBatchSize is how many datagrams one receive system call
	// fetches.
	DefaultBatchSize = 64
)

// Config configures a Listener. A nil *Config means the zero value: every
// event kind, default buffers.
type Config struct {
	// Kinds selects the event kinds to deliver, as a bitwise OR of Kind
	// values; KindNonzeroExit selects the exits with a nonzero ExitCode. 0
	// or KindAll means every kind. KindNone and KindLost are ignored here:
	// acknowledgements are never delivered and loss records always are.
	// Events of kinds this package does not know are delivered (with
	// Event.Raw) only when every kind is selected.
	//
	// With a subset, Listen asks the kernel to filter (Linux 6.6 and
	// later) and falls back to filtering in user space on older kernels;
	// Listener.Mode says which. Events are always filtered in user space
	// as well.
	Kinds Kind

	// ReadBufferSize is the socket receive buffer in bytes, which bounds
	// how many events the kernel queues before it drops them. Each event
	// costs about 800 bytes of it. 0 keeps net.core.rmem_default (often
	// 212992, room for about 256 events). See connector.Config.
	ReadBufferSize int

	// NoENOBUFS turns off the kernel's overrun reports (ENOBUFS). The
	// socket then drops events only while its buffer is full, instead of
	// until it has been drained. Unfiltered listeners still count the loss
	// through sequence gaps; filtered ones no longer learn of it.
	NoENOBUFS bool

	// BatchSize is how many datagrams one receive system call fetches. 0
	// means DefaultBatchSize.
	BatchSize int

	// AckTimeout bounds each wait for the kernel's acknowledgement. 0 means
	// DefaultAckTimeout. On kernels older than 6.6, a filtered Listen
	// waits this long once before it falls back to filtering in user
	// space.
	AckTimeout time.Duration

	// NetNS, if not 0, is a network namespace file descriptor to open the
	// socket in (see connector.Config.NetNS). Process events exist only
	// in the initial network namespace.
	NetNS int
}

// A Mode says how a Listener filters events.
type Mode int

// Filtering modes.
const (
	// ModeAll: the Listener takes every kind. Losses are counted exactly,
	// from gaps in each CPU's sequence numbers.
	ModeAll Mode = iota + 1
	// ModeKernelFilter: the kernel filters by kind (struct proc_input,
	// Linux 6.6 and later) and the Listener filters again in user space.
	// The kernel's filter leaves gaps in the sequence numbers, so losses
	// are reported (overruns) but cannot be counted.
	ModeKernelFilter
	// ModeUserFilter: the kernel ignored the filter request (before 6.6)
	// and sends every event; the Listener filters in user space. Losses
	// are counted exactly, as in ModeAll.
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

// CountsLoss reports whether a Listener in this mode can count lost events
// (KindLost records with a Lost count), rather than only learn that some
// were lost.
func (m Mode) CountsLoss() bool { return m == ModeAll || m == ModeUserFilter }

// Stats are a Listener's counters since Listen.
type Stats struct {
	// Events is the number of events delivered, KindLost records excluded.
	Events uint64
	// Filtered counts events received but not delivered because their kind
	// was not selected (the user-space half of filtering).
	Filtered uint64
	// Unknown counts delivered events of a kind this package does not know
	// (their payload is in Event.Raw).
	Unknown uint64
	// Acks counts acknowledgements received: this Listener's and, while
	// unfiltered, other processes'. They are never delivered.
	Acks uint64
	// Lost is the number of events known to be lost from sequence gaps,
	// the sum of the delivered KindLost counts. It stays 0 in
	// ModeKernelFilter.
	Lost uint64
	// Overruns counts receive buffer overruns (ENOBUFS): each lost one or
	// more events.
	Overruns uint64
	// OutOfOrder counts events whose sequence number was not after the
	// previous one from the same CPU (not expected from current kernels).
	OutOfOrder uint64
	// Malformed counts messages that could not be decoded.
	Malformed uint64
	// Foreign counts messages dropped because they were not process
	// events from the kernel.
	Foreign uint64
	// Conn are the underlying connection's counters.
	Conn connector.Stats
}

// A Listener receives process events from the kernel.
//
// Next and Events are not safe for concurrent use: one goroutine reads.
// Close, Stats, Mode, Drops, SetReadBuffer and SetDeadline are safe to call
// from any goroutine; Close unblocks a pending Next.
type Listener struct {
	c    *connector.Conn
	r    *connector.Reader
	cfg  Config
	mode Mode
	// kinds is the user-space filter; all is true when it selects all.
	kinds Kind
	all   bool
	gaps  bool // count sequence gaps (ModeAll, ModeUserFilter)
	seqs  seqTracker

	// pend is a message whose gap was reported with a KindLost record and
	// that Next delivers on its next call. It aliases the Reader's buffer,
	// which stays valid until the Reader's next call.
	pend    connector.Message
	hasPend bool

	// Handshake state.
	nonce    uint32
	waiting  bool
	acked    bool
	ackErr   uint32
	overrun  bool
	listened bool

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	dlMu     sync.Mutex
	deadline time.Time // the caller's read deadline

	events, filtered, unknown, acks, lost, overruns, ooo, malformed, foreign atomic.Uint64
}

// Listen opens a connector socket and subscribes to process events on it:
// it is connector.Dial with the configuration a Listener needs (group 1,
// only the kernel as sender, message buffers sized for process events,
// Config.ReadBufferSize, NoENOBUFS, BatchSize and NetNS) followed by
// NewListener. The Listener owns the socket: Close closes it.
//
// Before it opens the socket it checks that this process is in the initial
// user and PID namespaces, where the kernel answers subscriptions, and that
// the kernel has process events.
//
// Errors match, with errors.Is: connector.ErrNotInitialNetNS outside the
// initial network namespace; ErrNamespace outside the initial user or PID
// namespace; ErrNoProcEvents on a kernel without CONFIG_PROC_EVENTS;
// os.ErrPermission when the kernel refuses the request (before Linux 6.6,
// subscribing needs CAP_NET_ADMIN); ErrNoAck when no acknowledgement came
// for another reason; connector.ErrNotSupported on systems other than Linux.
//
// The event stream starts at the subscription: events that arrive before the
// kernel's acknowledgement are not delivered, and events from before Listen
// are never reported (list the running processes with Snapshot).
func Listen(cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := namespaceCheck(); err != nil {
		return nil, wrapErr("listen", err)
	}
	if err := checkProcEvents(); err != nil {
		return nil, wrapErr("listen", err)
	}
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		ReadBufferSize:    cfg.ReadBufferSize,
		NoENOBUFS:         cfg.NoENOBUFS,
		NetNS:             cfg.NetNS,
		MessageBufferSize: MessageBufferSize,
		BatchSize:         batchSize(cfg),
		Senders:           connector.SendersKernelOnly,
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

// MessageBufferSize is the connector.Config.MessageBufferSize Listen uses:
// a cn_proc datagram is 76 bytes (MinMessageBufferSize); the rest leaves
// room for a longer proc_event from a future kernel.
const MessageBufferSize = 512

// MinMessageBufferSize is the smallest connector.Config.MessageBufferSize
// NewListener accepts: one netlink header (16 bytes), one cn_msg header (20)
// and one 40-byte struct proc_event.
const MinMessageBufferSize = 16 + connector.HeaderLen + eventLen

func batchSize(cfg *Config) int {
	if cfg.BatchSize > 0 {
		return cfg.BatchSize
	}
	return DefaultBatchSize
}

// NewListener subscribes to process events on c, a Conn the caller opened:
// with connector.Dial, or on a fake kernel (cntest, with proctest for the
// process events agent) in unit tests. The Listener takes c over: it reads
// every message c receives, and Close closes c. On error c is left open.
//
// NewListener checks that c can carry process events and says exactly what
// is wrong otherwise: c must be open; its MessageBufferSize at least
// MinMessageBufferSize; and its sender policy must not accept userspace
// senders on the kernel's groups (connector.SendersAny), which
// would let any local process with CAP_NET_ADMIN forge process events. If c
// is not yet a member of group 1 it joins it (without CAP_NET_ADMIN this
// needs Linux 6.6 or later). Config.ReadBufferSize and NoENOBUFS are applied
// to c; Config.BatchSize and NetNS belong to Listen, which opens the socket,
// and are refused here. Messages from senders other than the kernel are
// dropped whatever c's policy (Stats.Foreign).
//
// Then it runs the subscription handshake as Listen describes, with the
// same errors.
func NewListener(c *connector.Conn, cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if c == nil {
		return nil, errors.New("proc: new listener: the *connector.Conn is nil")
	}
	if cfg.NetNS != 0 || cfg.BatchSize != 0 {
		return nil, errors.New("proc: new listener: Config.NetNS and Config.BatchSize configure the socket Listen opens; set them in the connector.Config of the Conn instead")
	}
	l, err := newListener(c, cfg, true)
	if err != nil {
		return nil, wrapErr("new listener", err)
	}
	return l, nil
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
	return listenConn(c, cfg)
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

// wrapErr prefixes err with "proc: op: " unless it already carries the
// prefix of package connector or of this package: one prefix per error.
func wrapErr(op string, err error) error {
	var oe *connector.OpError
	if errors.As(err, &oe) || strings.HasPrefix(err.Error(), "proc: ") {
		return err
	}
	return fmt.Errorf("proc: %s: %w", op, err)
}

// listenConn runs the subscription handshake on c. It does not close c on
// failure.
func listenConn(c *connector.Conn, cfg *Config) (*Listener, error) {
	l := &Listener{c: c, cfg: *cfg}
	if l.cfg.AckTimeout <= 0 {
		l.cfg.AckTimeout = DefaultAckTimeout
	}
	l.kinds = cfg.Kinds &^ KindLost
	if l.kinds&KindAll == 0 || l.kinds&KindAll == KindAll {
		l.kinds, l.all = KindAll, true
	}
	l.seqs.init()
	l.r = c.NewReader()
	if err := l.subscribe(); err != nil {
		if l.listened {
			// Undo the subscription that succeeded: kernels before 6.6
			// count listeners globally.
			_ = l.send(opIgnore, 0, false, rand.Uint32())
		}
		l.r.Release()
		return nil, err
	}
	return l, nil
}

// subscribe runs the subscription handshake and sets the mode.
func (l *Listener) subscribe() error {
	if !l.all {
		// Probe for struct proc_input with an unfiltered request, which
		// the kernel acknowledges; then narrow, which it does not.
		ok, err := l.request(opListen, KindAll, true)
		if err != nil {
			return err
		}
		if ok {
			l.listened = true
			if err := l.send(opListen, l.kinds, true, rand.Uint32()); err != nil {
				return err
			}
			l.mode = ModeKernelFilter
			return nil
		}
	}
	ok, err := l.request(opListen, 0, false)
	if err != nil {
		return err
	}
	if !ok {
		return l.diagnoseNoAck()
	}
	l.listened = true
	l.gaps = true
	if l.all {
		l.mode = ModeAll
	} else {
		l.mode = ModeUserFilter
	}
	return nil
}

// request sends a LISTEN or IGNORE request and waits for its
// acknowledgement. It reports false if none came within the timeout, and an
// error if the acknowledgement carried one. A request whose acknowledgement
// may have been dropped by a receive buffer overrun is sent again, twice at
// most.
func (l *Listener) request(op uint32, kinds Kind, input bool) (bool, error) {
	for try := 0; try < 3; try++ {
		l.nonce = rand.Uint32()
		l.waiting, l.acked, l.ackErr, l.overrun = true, false, 0, false
		if err := l.send(op, kinds, input, l.nonce); err != nil {
			l.waiting = false
			return false, err
		}
		err := l.waitAck()
		l.waiting = false
		if err != nil {
			return false, err
		}
		if l.acked {
			if l.ackErr != 0 {
				return false, ackError(syscall.Errno(l.ackErr), input)
			}
			return true, nil
		}
		if !l.overrun {
			return false, nil
		}
	}
	return false, nil
}

// send sends a subscription request: the 8-byte struct proc_input when
// input is set, else the classic 4-byte operation.
func (l *Listener) send(op uint32, kinds Kind, input bool, nonce uint32) error {
	var buf [procInputLen]byte
	binary.NativeEndian.PutUint32(buf[0:], op)
	data := buf[:mcastOpLen]
	if input {
		binary.NativeEndian.PutUint32(buf[4:], uint32(kinds&KindAll))
		data = buf[:procInputLen]
	}
	return l.c.Send(connector.Message{ID: connector.IDProc, Seq: nonce, Ack: nonce, Data: data})
}

// waitAck reads until the acknowledgement of l.nonce arrives or
// AckTimeout passes. Events read meanwhile precede the subscription: they
// only set the sequence baselines.
func (l *Listener) waitAck() error {
	if err := l.c.SetReadDeadline(time.Now().Add(l.cfg.AckTimeout)); err != nil {
		return err
	}
	defer l.restoreDeadline()
	var ev Event
	for !l.acked {
		m, from, err := l.r.Next()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		case errors.Is(err, connector.ErrOverrun):
			l.overruns.Add(1)
			l.overrun = true
			continue
		case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
			l.malformed.Add(1)
			continue
		default:
			return err
		}
		if !from.Kernel() || m.ID != connector.IDProc {
			l.foreign.Add(1)
			continue
		}
		if cpu, ok := peekCPU(m); ok && l.gapsPossible() {
			l.seqs.observe(cpu, m.Seq)
		}
		if Decode(m, &ev) == nil && ev.Kind == KindNone {
			l.noteAck(&ev)
		}
	}
	return nil
}

// gapsPossible reports whether sequence baselines are worth keeping: the
// socket may end up unfiltered.
func (l *Listener) gapsPossible() bool { return l.gaps || !l.listened }

func (l *Listener) noteAck(ev *Event) {
	l.acks.Add(1)
	if l.waiting && ev.Ack == l.nonce+1 {
		l.acked, l.ackErr = true, ev.AckErr
	}
}

func ackError(errno syscall.Errno, input bool) error {
	what := "classic"
	if input {
		what = "event filter"
	}
	if errno == syscall.EPERM {
		return fmt.Errorf("the kernel refused the %s subscription: %w: before Linux 6.6, subscribing to process events needs CAP_NET_ADMIN", what, errno)
	}
	return fmt.Errorf("the kernel refused the %s subscription: %w", what, errno)
}

// namespaceCheck is checkNamespaces; tests replace it.
var namespaceCheck = checkNamespaces

func (l *Listener) diagnoseNoAck() error {
	if err := namespaceCheck(); err != nil {
		return err
	}
	if err := checkProcEvents(); err != nil {
		return err
	}
	return fmt.Errorf("%w within %v; on kernels before 6.6 a process that sent one IGNORE too many can disable process events for everyone until the next reboot", ErrNoAck, l.cfg.AckTimeout)
}

// Mode returns how the Listener filters events.
func (l *Listener) Mode() Mode { return l.mode }

// Kinds returns the kinds the Listener delivers (KindAll for all).
func (l *Listener) Kinds() Kind { return l.kinds }

// Next waits for the next event and decodes it into ev, overwriting all of
// it. It does not allocate. ev.Raw aliases the Listener's buffer until the
// next call.
//
// Loss is reported in the stream, not as an error: a KindLost event with a
// count when a sequence gap shows lost events (ModeAll, ModeUserFilter), or
// with Lost 0 and CPU CPUUnknown when the kernel reports a receive buffer
// overrun, after which the Listener keeps going.
//
// Errors matching connector.ErrClosed (after Close) and
// os.ErrDeadlineExceeded (see SetDeadline) end a wait. Errors matching
// connector.ErrMalformed or connector.ErrTruncated report one undecodable
// message; the Listener stays usable, and the next call continues.
func (l *Listener) Next(ev *Event) error {
	if l.closed.Load() {
		return fmt.Errorf("proc: receive: %w", connector.ErrClosed)
	}
	for {
		var m connector.Message
		if l.hasPend {
			m, l.hasPend = l.pend, false
		} else {
			var err error
			var from connector.Sender
			m, from, err = l.r.Next()
			if err != nil {
				switch {
				case errors.Is(err, connector.ErrOverrun):
					l.overruns.Add(1)
					*ev = Event{Kind: KindLost, CPU: CPUUnknown}
					return nil
				case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
					l.malformed.Add(1)
				}
				return err
			}
			if !from.Kernel() || m.ID != connector.IDProc {
				l.foreign.Add(1)
				continue
			}
			if cpu, ok := peekCPU(m); ok && l.gaps {
				lost, ooo := l.seqs.observe(cpu, m.Seq)
				if ooo {
					l.ooo.Add(1)
				}
				if lost > 0 {
					l.lost.Add(uint64(lost))
					l.pend, l.hasPend = m, true
					*ev = Event{Kind: KindLost, CPU: cpu, Seq: m.Seq - lost, Lost: lost,
						Timestamp: binary.NativeEndian.Uint64(m.Data[offTimestamp:])}
					return nil
				}
			}
		}
		if err := Decode(m, ev); err != nil {
			l.malformed.Add(1)
			return err
		}
		switch {
		case ev.Kind == KindNone:
			l.noteAck(ev)
			continue
		case !l.match(ev):
			l.filtered.Add(1)
			continue
		case ev.Raw != nil:
			l.unknown.Add(1)
		}
		l.events.Add(1)
		return nil
	}
}

// match applies the user-space filter, with the kernel's rules: every kind
// when unfiltered, else a selected kind, or a nonzero exit when
// KindNonzeroExit is selected. Unknown kinds pass only when unfiltered.
func (l *Listener) match(ev *Event) bool {
	if l.all || l.kinds&ev.Kind != 0 {
		return true
	}
	return ev.Kind == KindExit && ev.ExitCode != 0 && l.kinds&KindNonzeroExit != 0
}

// peekCPU returns the proc_event.cpu field of m, if m is long enough.
func peekCPU(m connector.Message) (uint32, bool) {
	if len(m.Data) < headerLen {
		return 0, false
	}
	return binary.NativeEndian.Uint32(m.Data[offCPU:]), true
}

// Events returns an iterator over the Listener's events, for use with
// range:
//
//	for ev, err := range l.Events(ctx) { ... }
//
// Each iteration yields either an event or an error, as Next would return
// them; the *Event is reused and valid until the next iteration. The
// iteration ends when the loop body breaks, when the Listener is closed
// (after yielding an error matching connector.ErrClosed), or when ctx is
// done (after yielding ctx.Err()); a cancelled ctx interrupts a pending wait
// promptly. After errors that leave the Listener usable (malformed
// messages) the iteration continues if the body does.
//
// The caller's deadline (SetDeadline) also applies and ends the iteration
// with an error matching os.ErrDeadlineExceeded.
func (l *Listener) Events(ctx context.Context) iter.Seq2[*Event, error] {
	return func(yield func(*Event, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(nil, err)
			return
		}
		// On cancellation, a deadline in the past interrupts the wait. The
		// mutex orders that against the end of the iteration, which must
		// leave the caller's deadline in place.
		var (
			mu          sync.Mutex
			fired, done bool
		)
		stop := context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if !done {
				fired = true
				_ = l.c.SetReadDeadline(time.Unix(1, 0))
			}
		})
		defer func() {
			stop()
			mu.Lock()
			defer mu.Unlock()
			done = true
			if fired {
				l.restoreDeadline()
			}
		}()
		ev := new(Event)
		for {
			err := l.Next(ev)
			if err != nil {
				if ctx.Err() != nil {
					yield(nil, ctx.Err())
					return
				}
				if !yield(nil, err) || !recoverable(err) {
					return
				}
				continue
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// recoverable reports whether Next may be called again after err.
func recoverable(err error) bool {
	return errors.Is(err, connector.ErrMalformed) || errors.Is(err, connector.ErrTruncated)
}

// SetDeadline sets the deadline for Next (and Events): a wait past it fails
// with an error matching os.ErrDeadlineExceeded. The zero time removes it.
func (l *Listener) SetDeadline(t time.Time) error {
	l.dlMu.Lock()
	defer l.dlMu.Unlock()
	l.deadline = t
	return l.c.SetReadDeadline(t)
}

func (l *Listener) restoreDeadline() {
	l.dlMu.Lock()
	defer l.dlMu.Unlock()
	_ = l.c.SetReadDeadline(l.deadline)
}

// SetReadBuffer sets the socket's receive buffer in bytes, for example to
// grow it after an overrun. See Config.ReadBufferSize.
func (l *Listener) SetReadBuffer(bytes int) error {
	if err := l.c.SetReadBuffer(bytes); err != nil {
		return wrapErr("set read buffer", err)
	}
	return nil
}

// ReadBuffer returns the socket's receive buffer size as the kernel reports
// it (twice the size set: the kernel counts its bookkeeping too).
func (l *Listener) ReadBuffer() (int, error) {
	n, err := l.c.ReadBuffer()
	if err != nil {
		return 0, wrapErr("read buffer", err)
	}
	return n, nil
}

// Drops returns the kernel's count of messages dropped because this
// Listener's receive buffer was full: the Drops column of /proc/net/netlink
// for its socket. It counts losses in every mode, including
// ModeKernelFilter where sequence gaps cannot, but only as a total: it
// does not say which events were lost or when.
func (l *Listener) Drops() (uint64, error) {
	n, err := socketDrops(l.c.PortID())
	if err != nil {
		return 0, fmt.Errorf("proc: drops: %w", err)
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
		Conn:       l.c.Stats(),
	}
}

// Close unsubscribes (it sends IGNORE to the kernel, once, and does not wait
// for a reply) and closes the socket. A pending Next returns an error
// matching connector.ErrClosed, as do later calls. Other listeners, in this
// process or others, are not affected.
func (l *Listener) Close() error {
	err := error(&closedError{})
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		if l.listened {
			_ = l.send(opIgnore, 0, false, rand.Uint32())
		}
		l.closeErr = l.c.Close()
		err = nil
		if l.closeErr != nil {
			err = wrapErr("close", l.closeErr)
		}
	})
	return err
}

type closedError struct{}

func (*closedError) Error() string { return "proc: close: listener already closed" }
func (*closedError) Unwrap() error { return connector.ErrClosed }
