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

	// acks and overruns are counted while subscribing, for the
	// Listener's Stats.
	acks, overruns uint64
	// listened is set once a LISTEN succeeded: a failure after it undoes
	// the subscription.
	listened bool
}

// A subscription is the handshake's result.
type subscription struct {
	mode Mode
	// exact reports whether the socket receives every message the kernel
	// sends to group 1, acknowledgements included, so that a sequence gap
	// is exactly the number of messages lost.
	exact bool
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
	ok, err := h.request(opListen, probe, true)
	if err != nil {
		return subscription{}, err
	}
	if ok && exact {
		h.listened = true
		return subscription{mode: userMode(all), exact: true}, nil
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
		return subscription{mode: mode}, nil
	}
	// Before 6.6: the classic request, and a socket filter that keeps
	// other processes' acknowledgements out, where the socket takes one.
	ok, err = h.request(opListen, 0, false)
	if err != nil {
		return subscription{}, err
	}
	if !ok {
		return subscription{}, h.diagnoseNoAck()
	}
	h.listened = true
	if !exact {
		exact = h.c.SetBPF(ackFilter) != nil
	}
	return subscription{mode: userMode(all), exact: exact}, nil
}

// userMode is the Mode of a Listener that filters in user space only.
func userMode(all bool) Mode {
	if all {
		return ModeAll
	}
	return ModeUserFilter
}

// ackFilter is a classic BPF socket filter that drops acknowledgements
// (proc_event.what == PROC_EVENT_NONE, at offset 36 of the datagram: the
// 16-byte netlink header and the 20-byte cn_msg header come first) and
// accepts everything else. Comparing with 0 needs no byte-order care. A
// datagram too short to hold the field is dropped by the BPF machine, and
// no kernel process event is that short.
var ackFilter = func() []bpf.RawInstruction {
	p, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 16 + connector.HeaderLen + offWhat, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 1},
		bpf.RetConstant{Val: 0xFFFFFFFF},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic("proc: ack filter: " + err.Error())
	}
	return p
}()

// request sends a LISTEN or IGNORE request and waits for its
// acknowledgement with connector.Call. It reports false if none came within
// the timeout, and an error if the acknowledgement carried one. A request
// whose acknowledgement may have been dropped by a receive buffer overrun
// is sent again, twice at most.
func (h *handshake) request(op uint32, kinds Kind, input bool) (bool, error) {
	for try := 0; try < 3; try++ {
		before := h.c.Stats().Overruns
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
		m, _, err := connector.Call(ctx, h.c, requestMessage(op, kinds, input, nonce()), connector.Destination{}, matchAck)
		cancel()
		overrun := h.c.Stats().Overruns - before
		h.overruns += overrun
		switch {
		case err == nil:
			h.acks++
			if errno := u32(m.Data, offData); errno != 0 {
				return false, ackError(syscall.Errno(errno), input)
			}
			return true, nil
		case errors.Is(err, connector.ErrNoAgent):
			return false, fmt.Errorf("%w: %w", ErrNoProcEvents, err)
		case !errors.Is(err, context.DeadlineExceeded):
			return false, err
		case overrun == 0:
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
	if err := checkProcEvents(); err != nil {
		return err
	}
	timeout := fmt.Sprintf("within %v (Config.AckTimeout; the default is %v): if the kernel only answers late, raise Config.AckTimeout", h.timeout, DefaultAckTimeout)
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
