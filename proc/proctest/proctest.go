// Package proctest is a fake process events connector (cn_proc) for unit
// tests of code that consumes process events: it runs on a cntest.Kernel, in
// any process, without privileges.
//
//	k := cntest.New(nil)
//	agent := proctest.New(k, nil)
//	c, _ := k.Dial(&connector.Config{Groups: []connector.Group{connector.IDProc.Group()}, Senders: connector.SendersKernelOnly})
//	l, _ := proc.NewListener(c, nil)
//	agent.Emit(proc.Event{Kind: proc.KindExec, PID: 42, TGID: 42})
//
// The Agent answers subscription requests as drivers/connector/cn_proc.c
// does and sends events as the kernel sends them, byte for byte, through an
// encoder of this package's own (so a bug in package proc's decoder shows up
// against it rather than cancelling out):
//
//   - Linux 6.6 and later (the default): the 8-byte struct proc_input
//     request, each socket's own event filter (cn_filter), and the global
//     listener count that only a socket's first LISTEN raises.
//   - Older kernels (Options.Legacy): only the 4-byte request is understood,
//     an 8-byte one is ignored without an acknowledgement, every LISTEN
//     raises and every IGNORE lowers one global count, and every group-1
//     member gets every event.
//   - A kernel that ignores the caller (Options.Silent): the namespace case,
//     where requests are dropped without an acknowledgement.
//
// In both versions no event is generated while the listener count is below
// 1, sequence numbers count per CPU and are shared by events and
// acknowledgements (and consumed by events a socket's filter drops), and
// acknowledgements are multicast to group 1 with the request's ack + 1.
// Tests can make acknowledgements fail (SetAckError), lose them to a buffer
// overrun (DropAcks), and lose events on a CPU (Lose, Drop).
//
// # Testing loss
//
// A proc.Listener reports loss on the fake exactly as on the kernel, in
// every mode, because it reads the socket's drop counter through
// connector.Conn.Drops, which a cntest socket keeps under the kernel's rules
// (sk_drops):
//
//   - Drop(cpu, n) loses n events to a full receive buffer: the Listener
//     delivers a KindLost record with CPU CPUUnknown and Lost 0 for the
//     overrun (unless NoENOBUFS), then, with the next event from cpu, a
//     KindLost record with that CPU and Lost n; Stats.Lost and
//     Listener.Drops say n. Emit that next event once the Listener has read
//     what was queued: until its queue drains, a congested socket drops
//     every event, as the kernel's does.
//   - Lose(cpu, n) loses n events before any socket (the kernel's
//     GFP_NOWAIT allocation failure): nothing is counted, so on Linux 6.6
//     and later (the default) no KindLost record follows, in any mode, as
//     on the kernel; with Options.Legacy the Listener sees every message
//     (a cntest socket takes no BPF filter), and the sequence gap yields a
//     KindLost record with Lost n.
//
// An Agent is safe for concurrent use.
package proctest

import (
	"encoding/binary"
	"sync"
	"syscall"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
)

// Kernel ABI of cn_proc (include/uapi/linux/cn_proc.h), kept separate from
// package proc's on purpose.
const (
	opListen = 1 // PROC_CN_MCAST_LISTEN
	opIgnore = 2 // PROC_CN_MCAST_IGNORE

	// eventAll is PROC_EVENT_ALL (Linux 6.6).
	eventAll = 0xE00003C7
	// eventNonzeroExit is PROC_EVENT_NONZERO_EXIT, a filter bit only.
	eventNonzeroExit = 0x20000000
	eventExit        = 0x80000000
)

// EventLen is the length of what AppendEvent appends for a known kind:
// sizeof(struct proc_event) since Linux 3.2.
const EventLen = 40

// Options configure an Agent. The zero value (or nil) is a Linux 6.6 or
// later kernel that answers every request.
type Options struct {
	// Legacy makes the agent behave like a kernel before Linux 6.6: no
	// struct proc_input (an 8-byte request is ignored without an
	// acknowledgement), no per-socket filter, and one global listener
	// count that every LISTEN raises and every IGNORE lowers.
	Legacy bool
	// Silent makes the agent ignore every request without an
	// acknowledgement, as the kernel does for a sender outside the
	// initial user or PID namespace. Events are still sent while the
	// listener count (see SetListeners) is at least 1.
	Silent bool
	// AckCPU is the CPU acknowledgements come from (the CPU of the
	// requesting task in the kernel).
	AckCPU uint32
	// NewKinds are event kinds this kernel knows beyond Linux 6.6's
	// PROC_EVENT_ALL, as a newer kernel would: its filter keeps them when
	// a socket asks for every kind. Kinds not in PROC_EVENT_ALL or
	// NewKinds pass only sockets without a filter or with exactly ALL.
	NewKinds proc.Kind
}

// A Request is a subscription request the agent received, decoded.
type Request struct {
	// Port is the sender's port id.
	Port uint32
	// Len is the payload length: 4 (classic), 8 (struct proc_input) or
	// something the kernel ignores.
	Len int
	// Op is the multicast operation (1 LISTEN, 2 IGNORE), and Kinds the
	// event filter of an 8-byte request as sent (before the kernel masks
	// it with PROC_EVENT_ALL).
	Op    uint32
	Kinds proc.Kind
	// Ack is the request's cn_msg ack field, the nonce the kernel answers
	// with Ack + 1.
	Ack uint32
	// Answered reports whether an acknowledgement was generated.
	Answered bool
}

// An Agent is a fake cn_proc on a cntest.Kernel.
type Agent struct {
	k *cntest.Kernel

	mu        sync.Mutex
	opts      Options
	seq       map[uint32]uint32 // next sequence number per CPU
	listeners int               // proc_event_num_listeners
	socks     map[uint32]*sockState
	ackErr    syscall.Errno
	dropAcks  int
	clock     uint64
	reqs      []Request
}

// sockState is the kernel's per-socket struct proc_input (sk_user_data).
type sockState struct {
	op     uint32
	filter uint32
}

// New installs a fake cn_proc agent for connector.IDProc on k and returns
// it. A nil opts means the defaults. A nil k is a programming error: New
// panics with a message that says so (as the test helpers of package
// cntest do for theirs).
func New(k *cntest.Kernel, opts *Options) *Agent {
	if k == nil {
		panic("proctest: New: the *cntest.Kernel is nil: give it the fake kernel from cntest.New")
	}
	a := &Agent{k: k, seq: map[uint32]uint32{}, socks: map[uint32]*sockState{}, clock: 1 << 30}
	if opts != nil {
		a.opts = *opts
	}
	k.Handle(connector.IDProc, a.handle)
	return a
}

// SetSilent switches the namespace behaviour (Options.Silent) on or off.
func (a *Agent) SetSilent(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.opts.Silent = on
}

// SetAckError makes every later request fail with errno in its
// acknowledgement, leaving the subscription state unchanged: syscall.EPERM
// is what a kernel before 6.6 answers a sender without CAP_NET_ADMIN,
// syscall.ENOMEM what any kernel answers when it cannot allocate the
// socket's state. 0 restores success.
func (a *Agent) SetAckError(errno syscall.Errno) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ackErr = errno
}

// DropAcks makes the next n acknowledgements miss their requester as a full
// receive buffer would: the requester's socket gets an overrun (ENOBUFS,
// unless it set NoENOBUFS) instead. Other sockets still get them.
func (a *Agent) DropAcks(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropAcks = n
}

// SetListeners sets the kernel's global listener count, as if other
// processes had subscribed (or unsubscribed). Events are generated only
// while it is at least 1.
func (a *Agent) SetListeners(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.listeners = n
}

// Listeners returns the kernel's global listener count
// (proc_event_num_listeners).
func (a *Agent) Listeners() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.listeners
}

// SetSeq sets the next sequence number of cpu, for example to test wrapping
// at 2^32.
func (a *Agent) SetSeq(cpu, seq uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq[cpu] = seq
}

// Filter returns the event filter the kernel keeps for the socket with the
// given port id (Linux 6.6 and later) and whether it keeps one: a socket
// that never sent a request has none and gets everything. After IGNORE the
// filter is 0 (KindNone).
func (a *Agent) Filter(port uint32) (proc.Kind, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.socks[port]
	if s == nil {
		return 0, false
	}
	return proc.Kind(s.filter), true
}

// Requests returns the subscription requests received so far, oldest
// first.
func (a *Agent) Requests() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Request(nil), a.reqs...)
}

// nextSeqLocked returns the next sequence number of cpu and consumes it.
func (a *Agent) nextSeqLocked(cpu uint32) uint32 {
	s := a.seq[cpu]
	a.seq[cpu] = s + 1
	return s
}

func (a *Agent) tickLocked() uint64 {
	a.clock += 1000
	return a.clock
}

// handle is cn_proc_mcast_ctl.
func (a *Agent) handle(req connector.Message, from connector.Sender) []cntest.Reply {
	a.mu.Lock()
	r := Request{Port: from.Port, Len: len(req.Data), Ack: req.Ack}
	ne := binary.NativeEndian
	if len(req.Data) >= 4 {
		r.Op = ne.Uint32(req.Data)
	}
	if len(req.Data) >= 8 {
		r.Kinds = proc.Kind(ne.Uint32(req.Data[4:]))
	}
	idx := len(a.reqs)
	a.reqs = append(a.reqs, r)
	if a.opts.Silent {
		a.mu.Unlock()
		return nil
	}
	var errno uint32
	filter := uint32(eventAll)
	switch {
	case len(req.Data) == 4:
	case len(req.Data) == 8 && !a.opts.Legacy:
		all := eventAll | uint32(a.opts.NewKinds)
		filter = uint32(r.Kinds) & all
		if filter == 0 || filter == all {
			filter = eventAll
		}
	default:
		// Any other length, and proc_input before 6.6: ignored.
		a.mu.Unlock()
		return nil
	}
	switch {
	case a.ackErr != 0:
		errno = uint32(a.ackErr)
	case a.opts.Legacy:
		switch r.Op {
		case opListen:
			a.listeners++
		case opIgnore:
			a.listeners--
		default:
			errno = uint32(syscall.EINVAL)
		}
	default:
		s := a.socks[from.Port]
		first := s == nil
		if first {
			s = &sockState{}
			a.socks[from.Port] = s
		}
		// cn_proc_mcast_ctl stores the event type for every request,
		// an invalid one included, before it looks at the operation.
		s.filter = filter
		switch r.Op {
		case opListen:
			if first || s.op != opListen {
				a.listeners++
			}
		case opIgnore:
			if !first && s.op != opIgnore {
				a.listeners--
			}
			s.filter = 0
		default:
			errno = uint32(syscall.EINVAL)
		}
		s.op = r.Op
	}
	// cn_proc_ack: nothing when nobody listens after the operation.
	if a.listeners < 1 {
		a.mu.Unlock()
		return nil
	}
	a.reqs[idx].Answered = true
	cpu := a.opts.AckCPU
	seq := a.nextSeqLocked(cpu)
	p := AppendEvent(nil, &proc.Event{Kind: proc.KindNone, CPU: cpu, Timestamp: a.tickLocked(), AckErr: errno})
	dropFor := uint32(0)
	dropping := a.dropAcks > 0
	if dropping {
		a.dropAcks--
		dropFor = from.Port
	}
	a.mu.Unlock()
	a.deliver(connector.Message{ID: connector.IDProc, Seq: seq, Ack: req.Ack + 1, Data: p}, proc.KindNone, 0, dropping, dropFor)
	return nil
}

// passesLocked is cn_filter for the socket with the given port id.
func (a *Agent) passesLocked(port uint32, what proc.Kind, exitCode uint32) bool {
	if a.opts.Legacy {
		return true
	}
	s := a.socks[port]
	switch {
	case s == nil:
		return true
	case s.op == opIgnore:
		return false
	case s.filter == eventAll:
		return true
	case s.filter&eventNonzeroExit != 0 && uint32(what) == eventExit && exitCode != 0:
		return true
	}
	return s.filter&uint32(what) != 0
}

// deliver multicasts m to the group-1 members whose filter passes it. If
// drop is set, the socket with port id dropFor gets an overrun instead.
func (a *Agent) deliver(m connector.Message, what proc.Kind, exitCode uint32, drop bool, dropFor uint32) int {
	d := cntest.MustDatagram(m)
	g := connector.IDProc.Group()
	n := 0
	for _, port := range a.k.Members(g) {
		a.mu.Lock()
		ok := a.passesLocked(port, what, exitCode)
		a.mu.Unlock()
		if !ok {
			continue
		}
		if drop && port == dropFor {
			_ = a.k.Overrun(port)
			continue
		}
		if a.k.InjectRaw(port, connector.Sender{Group: g}, d) == nil {
			n++
		}
	}
	return n
}

// Emit sends ev as the kernel would: from CPU ev.CPU, with that CPU's next
// sequence number (ev.Seq and ev.Ack are ignored), to every member of
// group 1 whose filter passes it. A Timestamp of 0 is replaced by the
// agent's clock, which advances 1000 ns per message. It returns the
// sequence number used and how many sockets queued the event (a full or
// congested queue drops it and reports an overrun, as the kernel does).
// While the listener count is below 1 the kernel generates nothing: Emit
// then returns ok false and consumes no sequence number.
//
// Any Kind may be sent, including kinds package proc does not know (see
// AppendEvent for their payload).
func (a *Agent) Emit(ev proc.Event) (seq uint32, queued int, ok bool) {
	a.mu.Lock()
	if a.listeners < 1 {
		a.mu.Unlock()
		return 0, 0, false
	}
	seq = a.nextSeqLocked(ev.CPU)
	if ev.Timestamp == 0 {
		ev.Timestamp = a.tickLocked()
	}
	a.mu.Unlock()
	m := connector.Message{ID: connector.IDProc, Seq: seq, Data: AppendEvent(nil, &ev)}
	return seq, a.deliver(m, ev.Kind, ev.ExitCode, false, 0), true
}

// EmitPayload sends payload as the data of a process event message from
// cpu, with that CPU's next sequence number, through each socket's filter
// (which reads the kind from the first 4 bytes, if there are 4): for
// malformed, truncated or future events. See Emit for the results.
func (a *Agent) EmitPayload(cpu uint32, payload []byte) (seq uint32, queued int, ok bool) {
	a.mu.Lock()
	if a.listeners < 1 {
		a.mu.Unlock()
		return 0, 0, false
	}
	seq = a.nextSeqLocked(cpu)
	a.mu.Unlock()
	var what proc.Kind
	var code uint32
	if len(payload) >= 4 {
		what = proc.Kind(binary.NativeEndian.Uint32(payload))
	}
	if len(payload) >= 28 {
		code = binary.NativeEndian.Uint32(payload[24:])
	}
	m := connector.Message{ID: connector.IDProc, Seq: seq, Data: append([]byte(nil), payload...)}
	return seq, a.deliver(m, what, code, false, 0), true
}

// Lose generates n events on cpu that never reach any socket, as when the
// kernel fails to allocate them (GFP_NOWAIT): their sequence numbers are
// consumed, nothing is queued, no drop is counted and no overrun reported.
// Only a Listener that receives every message (Options.Legacy) can count
// them; see "Testing loss" in the package documentation.
func (a *Agent) Lose(cpu, n uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.listeners < 1 {
		return
	}
	a.seq[cpu] += n
}

// Drop generates n events on cpu that every group-1 member loses to a full
// receive buffer (events every member's filter would have passed): their
// sequence numbers are consumed, each member's drop counter
// (connector.Conn.Drops) rises by n, and each member gets an overrun
// (ENOBUFS, unless it set NoENOBUFS) and stays congested until it has read
// its queue. See "Testing loss" in the package documentation.
func (a *Agent) Drop(cpu, n uint32) {
	a.mu.Lock()
	if a.listeners < 1 {
		a.mu.Unlock()
		return
	}
	a.seq[cpu] += n
	a.mu.Unlock()
	for _, port := range a.k.Members(connector.IDProc.Group()) {
		for range n {
			_ = a.k.Overrun(port)
		}
	}
}

// Message returns ev as the cn_msg the kernel sends, with the given
// sequence number: id 1:1, ack 0 (KindNone: ev.Ack), the payload from
// AppendEvent. A nil ev panics with a message that says so.
func Message(ev *proc.Event, seq uint32) connector.Message {
	if ev == nil {
		panic("proctest: Message: the *proc.Event is nil")
	}
	m := connector.Message{ID: connector.IDProc, Seq: seq, Data: AppendEvent(nil, ev)}
	if ev.Kind == proc.KindNone {
		m.Ack = ev.Ack
	}
	return m
}

// AppendEvent appends ev encoded as the kernel's 40-byte struct proc_event
// (include/uapi/linux/cn_proc.h) in host byte order: what, cpu,
// timestamp_ns, then the event_data union member of ev.Kind, with unused
// bytes zero. For a kind package proc does not know, a non-nil ev.Raw is
// appended as the whole payload instead. A nil ev panics with a message
// that says so.
func AppendEvent(b []byte, ev *proc.Event) []byte {
	if ev == nil {
		panic("proctest: AppendEvent: the *proc.Event is nil")
	}
	if !ev.Kind.Known() && ev.Raw != nil {
		return append(b, ev.Raw...)
	}
	var p [EventLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(p[0:], uint32(ev.Kind))
	ne.PutUint32(p[4:], ev.CPU)
	ne.PutUint64(p[8:], ev.Timestamp)
	u := p[16:]
	put := func(off int, v uint32) { ne.PutUint32(u[off:], v) }
	pid := func() { put(0, uint32(ev.PID)); put(4, uint32(ev.TGID)) }
	switch ev.Kind {
	case proc.KindNone:
		put(0, ev.AckErr)
	case proc.KindFork:
		put(0, uint32(ev.ParentPID))
		put(4, uint32(ev.ParentTGID))
		put(8, uint32(ev.PID))
		put(12, uint32(ev.TGID))
	case proc.KindExec, proc.KindSID:
		pid()
	case proc.KindUID:
		pid()
		put(8, ev.RUID)
		put(12, ev.EUID)
	case proc.KindGID:
		pid()
		put(8, ev.RGID)
		put(12, ev.EGID)
	case proc.KindPtrace:
		pid()
		put(8, uint32(ev.TracerPID))
		put(12, uint32(ev.TracerTGID))
	case proc.KindComm:
		pid()
		copy(u[8:24], ev.Comm[:])
	case proc.KindCoredump:
		pid()
		put(8, uint32(ev.ParentPID))
		put(12, uint32(ev.ParentTGID))
	case proc.KindExit:
		pid()
		put(8, ev.ExitCode)
		put(12, uint32(ev.ExitSignal))
		put(16, uint32(ev.ParentPID))
		put(20, uint32(ev.ParentTGID))
	}
	return append(b, p[:]...)
}
