package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"golang.org/x/net/bpf"
)

// allButAcks is the kernel filter of an unfiltered Listener: every event
// kind, but not PROC_EVENT_ALL itself, so that cn_filter applies the
// bitwise test, which no acknowledgement (what 0) passes. The kernel masks
// it with its own PROC_EVENT_ALL, so kinds of newer kernels pass too. It
// leaves out NONZERO_EXIT, a filter bit that no event carries.
const allButAcks = ^KindNonzeroExit

// A handshake is one subscription exchange with the kernel. It lives only
// while Listen or NewListener subscribes; what it learns is its result.
type handshake struct {
	c       *connector.Conn
	timeout time.Duration

	// acks and overruns are counted while subscribing: overruns decides
	// whether a request is sent again.
	acks, overruns uint64
	// listened is set once a LISTEN succeeded: a failure after it undoes
	// the subscription.
	listened bool

	// early holds, in arrival order, what the handshake read: the events
	// (and other messages) that came before an acknowledgement, the
	// acknowledgements themselves (so that the sequence numbers stay
	// whole) and the overruns noticed meanwhile. The Listener delivers
	// them before anything else. Past maxEarly messages the rest are only
	// counted, in excess, and delivered as one loss record.
	early  []earlyMsg
	excess uint64
	// skipped holds, per CPU, the sequence number of the last process
	// events message not kept, so that the Listener does not count those
	// again as a sequence gap.
	skipped map[uint32]uint32
	// noted is the Conn's overrun count already in early.
	noted uint64

	// probe, when set, is a request sent without waiting whose
	// acknowledgement the handshake looks for among what it reads;
	// probeAcked is set when it arrives.
	probe      *connector.Message
	probeAcked bool

	// waits counts the requests whose wait for an acknowledgement ran
	// out (each took the whole timeout), for the error that says so.
	waits int
}

// maxEarly bounds how many messages a handshake keeps for the Listener: a
// storm during a long AckTimeout (before 6.6 the first request always waits
// for all of it) cannot take more memory than this many small copies.
var maxEarly = 1 << 16

// An earlyMsg is a message the handshake read, or an overrun it noticed.
type earlyMsg struct {
	m       connector.Message
	from    connector.Sender
	overrun bool
	// ownAck marks the acknowledgement of the handshake's own request:
	// counted already (Stats.Acks), kept for its sequence number only.
	ownAck bool
}

// keep adds a message the handshake read to early, after the overruns the
// Conn counted before it; own marks the acknowledgement of the handshake's
// own request.
func (h *handshake) keep(m connector.Message, from connector.Sender, own bool) {
	if h.probe != nil && matchAck(*h.probe, m, from) {
		h.probeAcked, own = true, true
		h.acks++
	}
	h.noteOverruns()
	if len(h.early) < maxEarly {
		h.early = append(h.early, earlyMsg{m: m, from: from, ownAck: own})
		return
	}
	proc := from.Kernel() && m.ID == connector.IDProc && len(m.Data) >= headerLen
	if proc {
		if h.skipped == nil {
			h.skipped = make(map[uint32]uint32)
		}
		h.skipped[u32(m.Data, offCPU)] = m.Seq
	}
	if !own && (!proc || u32(m.Data, offWhat) != uint32(KindNone)) {
		h.excess++
	}
}

// noteOverruns adds to early an overrun record for each overrun the Conn
// counted since the last call.
func (h *handshake) noteOverruns() {
	for n := h.c.Stats().Overruns; h.noted < n; h.noted++ {
		h.early = append(h.early, earlyMsg{overrun: true})
	}
}

// A subscription is the handshake's result.
type subscription struct {
	mode Mode
	// exact reports whether the socket receives every message the kernel
	// sends to group 1, acknowledgements included, so that a sequence gap
	// is exactly the number of messages lost.
	exact bool
	// input reports whether the kernel took struct proc_input, with filter
	// the event type the socket's last request set.
	input  bool
	filter Kind
}

// subscribe runs the handshake for a user-space filter of kinds (all when
// every kind is selected); with exact, the socket is left to take every
// message the kernel sends to group 1 (Config.ExactLoss). On error it has
// undone what it subscribed.
func (h *handshake) subscribe(kinds Kind, all, exact bool) (subscription, error) {
	s, err := h.run(kinds, all, exact)
	if err != nil && h.listened {
		// Kernels before 6.6 count listeners globally: undo ours.
		_ = h.c.Send(requestMessage(opIgnore, 0, false, nonce()))
	}
	return s, err
}

func (h *handshake) run(kinds Kind, all, exact bool) (subscription, error) {
	// Probe for struct proc_input with an unfiltered request, which the
	// kernel acknowledges; then set the filter, which it does not. For an
	// exact count the probe asks for event type 0, which every kernel
	// since 6.6 reads as its own PROC_EVENT_ALL (newer kinds included):
	// cn_filter then passes every message, acknowledgements too.
	probe := KindAll
	if exact {
		probe = 0
	}
	release, version := kernelOf(h)
	var ok bool
	switch version {
	case before66:
		// uname says before 6.6, which is not decisive (a vendor kernel
		// may have the filter): the probe goes out without a wait, and
		// the classic request, which every kernel acknowledges, right
		// after it. The kernel handles each request within its send,
		// so the probe's acknowledgement, if any, arrives before the
		// classic one: no waiting for one that never comes.
		req := requestMessage(opListen, probe, true, nonce())
		if err := h.c.Send(req); err != nil {
			return subscription{}, err
		}
		h.probe = &req
		acked, err := h.request(opListen, 0, false)
		h.probe = nil
		if err != nil {
			return subscription{}, err
		}
		if !acked {
			return subscription{}, h.diagnoseNoAck()
		}
		h.listened = true
		if !h.probeAcked {
			return h.classic(all, exact), nil
		}
		ok = true
	default:
		var err error
		if ok, err = h.request(opListen, probe, true); err != nil {
			return subscription{}, err
		}
		if !ok && version == since66 {
			// Linux 6.6 and later acknowledge every request from the
			// initial namespaces, so the wait was too short (the
			// acknowledgement queued behind other messages, say): the
			// version is decisive, there is no classic path to fall
			// back to. The request is sent once more without a wait
			// (the kernel applies it within the send); its
			// acknowledgements come later, as other processes' do.
			if namespaceUnknown() != "" {
				// Whether the kernel ignored a sender outside the
				// initial namespaces cannot be told: say so.
				return subscription{}, h.diagnoseNoAck()
			}
			if err := namespaceCheck(); err != nil {
				return subscription{}, err
			}
			if err := h.c.Send(requestMessage(opListen, probe, true, nonce())); err != nil {
				return subscription{}, fmt.Errorf("on Linux %s: %w", release, err)
			}
			ok = true
		}
	}
	if ok && exact {
		h.listened = true
		return subscription{mode: userMode(all), exact: true, input: true, filter: probe}, nil
	}
	if ok {
		h.listened = true
		filter, mode := kinds, ModeKernelFilter
		if all {
			filter, mode = allButAcks, ModeAll
		}
		if err := h.c.Send(requestMessage(opListen, filter, true, nonce())); err != nil {
			return subscription{}, err
		}
		return subscription{mode: mode, input: true, filter: filter}, nil
	}
	// Before 6.6: the classic request.
	ok, err := h.request(opListen, 0, false)
	if err != nil {
		return subscription{}, err
	}
	if !ok {
		return subscription{}, h.diagnoseNoAck()
	}
	h.listened = true
	return h.classic(all, exact), nil
}

// classic is the subscription on a kernel without the event filter (before
// 6.6): filtered in user space, with a socket filter that keeps other
// processes' acknowledgements out, where the socket takes one and exact is
// not asked for.
func (h *handshake) classic(all, exact bool) subscription {
	if !exact {
		exact = h.c.SetBPF(ackFilter) != nil
	}
	return subscription{mode: userMode(all), exact: exact}
}

// What the running kernel's version (uname) tells the handshake.
const (
	versionUnknown = iota // a fake kernel's Conn, or no version
	before66
	since66
)

// kernelOf is handshake.kernel; tests replace it.
var kernelOf = (*handshake).kernel

// kernel returns the running kernel's release and what it tells: nothing
// for a Conn that is not a kernel socket (a fake kernel, whose version is
// not the host's).
func (h *handshake) kernel() (string, int) {
	if _, err := h.c.SyscallConn(); err != nil {
		return "", versionUnknown
	}
	release, major, minor, unknown := kernelVersion()
	switch {
	case unknown != "":
		return release, versionUnknown
	case major > 6 || major == 6 && minor >= 6:
		return release, since66
	}
	return release, before66
}

// userMode is the Mode of a Listener that filters in user space only.
func userMode(all bool) Mode {
	if all {
		return ModeAll
	}
	return ModeUserFilter
}

// ackFilter is a classic BPF socket filter that drops acknowledgements and
// accepts everything else; onlyAcks (CheckEvents) is its opposite.
var ackFilter, onlyAcks = whatFilter(false), whatFilter(true)

// whatFilter assembles a classic BPF socket filter that tests
// proc_event.what == PROC_EVENT_NONE (an acknowledgement), at offset 36 of
// the datagram (the 16-byte netlink header and the 20-byte cn_msg header
// come first), and accepts the datagrams for which the test equals acks.
// Comparing with 0 needs no byte-order care. A datagram too short to hold
// the field is dropped by the BPF machine, and no kernel process event is
// that short.
func whatFilter(acks bool) []bpf.RawInstruction {
	isAck := bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 1}
	if acks {
		isAck = bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1}
	}
	p, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 16 + connector.HeaderLen + offWhat, Size: 4},
		isAck,
		bpf.RetConstant{Val: 0xFFFFFFFF},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic("proc: acknowledgement filter: " + err.Error())
	}
	return p
}

// request sends a LISTEN or IGNORE request and waits for its
// acknowledgement with connector.Call. It reports false if none came within
// the timeout, and an error if the acknowledgement carried one. A request
// whose acknowledgement may have been dropped by a receive buffer overrun
// is sent again, twice at most.
func (h *handshake) request(op uint32, kinds Kind, input bool) (bool, error) {
	// What the call reads that is not the acknowledgement is kept for the
	// Listener: the kernel sends to group 1 while any process listens, so
	// events can come before the acknowledgement, and they are the
	// Listener's to deliver.
	keep := connector.WithUnmatched(connector.HandlerFunc(func(r connector.Request) { h.keep(r.Msg, r.From, false) }))
	for try := 0; try < 3; try++ {
		before := h.c.Stats().Overruns
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
		m, from, err := connector.Call(ctx, h.c, requestMessage(op, kinds, input, nonce()), connector.Destination{}, matchAck, keep)
		cancel()
		overrun := h.c.Stats().Overruns - before
		h.overruns += overrun
		if err == nil {
			h.keep(m, from, true)
		} else {
			h.noteOverruns()
		}
		switch {
		case err == nil:
			h.acks++
			if errno := u32(m.Data, offData); errno != 0 {
				return false, ackError(syscall.Errno(errno), input)
			}
			return true, nil
		case errors.Is(err, connector.ErrNoAgent):
			return false, &noAgentError{err}
		case !errors.Is(err, context.DeadlineExceeded):
			return false, err
		}
		h.waits++
		if overrun == 0 {
			return false, nil
		}
	}
	return false, nil
}

// matchAck is the process events connector's acknowledgement
// (drivers/connector/cn_proc.c, cn_proc_ack): from the kernel, id 1:1, ack =
// the request's ack + 1 (its seq is a per-CPU event counter, not the
// request's), and what = PROC_EVENT_NONE.
func matchAck(req, reply connector.Message, from connector.Sender) bool {
	return from.Kernel() && connector.MatchAckPlusOne(req, reply, from) &&
		len(reply.Data) >= offData+4 && u32(reply.Data, offWhat) == uint32(KindNone)
}

// requestMessage builds a subscription request: the 8-byte struct
// proc_input when input is set, else the classic 4-byte operation. The
// nonce goes in ack, which the kernel answers with ack + 1.
func requestMessage(op uint32, kinds Kind, input bool, nonce uint32) connector.Message {
	b := make([]byte, procInputLen)
	binary.NativeEndian.PutUint32(b[0:], op)
	if !input {
		b = b[:mcastOpLen]
	} else {
		binary.NativeEndian.PutUint32(b[4:], uint32(kinds))
	}
	return connector.Message{ID: connector.IDProc, Seq: nonce, Ack: nonce, Data: b}
}

// nonce returns a random non-zero request nonce.
func nonce() uint32 {
	for {
		if n := rand.Uint32(); n != 0 && n != ^uint32(0) {
			return n
		}
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

// diagnoseNoAck says why no acknowledgement came, where it can tell.
func (h *handshake) diagnoseNoAck() error {
	if err := namespaceCheck(); err != nil {
		return err
	}
	if _, err := h.c.SyscallConn(); err == nil {
		// A kernel socket: the host's agents are the Conn's.
		if err := checkProcEvents(); err != nil {
			return err
		}
	}
	timeout := fmt.Sprintf("within %v (Config.AckTimeout; the default is %v): if the kernel only answers late, raise Config.AckTimeout", h.timeout, DefaultAckTimeout)
	if h.waits > 1 {
		timeout = fmt.Sprintf("to any of %d requests, each waited for %v (%v in all; Config.AckTimeout, the default is %v): if the kernel only answers late, raise Config.AckTimeout", h.waits, h.timeout, time.Duration(h.waits)*h.timeout, DefaultAckTimeout)
	}
	if unknown := namespaceUnknown(); unknown != "" {
		return fmt.Errorf("%w %s; the kernel also ignores subscriptions from non-initial user or PID namespaces without a reply, and whether this process is in one could not be determined: %s", ErrNoAck, timeout, unknown)
	}
	return fmt.Errorf("%w %s; %s", ErrNoAck, timeout, h.kernelEvidence())
}

// ignoreNote is what a kernel before 6.6 can do to every listener.
const ignoreNote = "a process that sent one IGNORE too many can disable process events for everyone until the next reboot"

// kernelEvidence says what the running kernel's version tells about a
// missing acknowledgement: nothing about a fake kernel (a Conn without a
// socket) or an unknown version.
func (h *handshake) kernelEvidence() string {
	if _, err := h.c.SyscallConn(); err != nil {
		return "the Conn is not a kernel socket (a fake kernel), so the kernel version says nothing; on kernels before 6.6 " + ignoreNote
	}
	release, major, minor, unknown := kernelVersion()
	switch {
	case unknown != "":
		return "the kernel version is unknown (" + unknown + "); if it is before 6.6, " + ignoreNote
	case major > 6 || major == 6 && minor >= 6:
		return fmt.Sprintf("Linux %s (6.6 or later) acknowledges every subscription request from the initial namespaces, so the timeout was too short or the acknowledgement was lost", release)
	}
	return fmt.Sprintf("on Linux %s (before 6.6) %s", release, ignoreNote)
}
