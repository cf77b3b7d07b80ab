package cntest

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/transport"
)

const (
	// DefaultQueueLen is the default receive buffer of a fake socket, in
	// process events, which the kernel charges their truesize (960 bytes
	// with the default model, so 245760 bytes; the kernel's own default,
	// net.core.rmem_default, 212992 bytes, holds 221 of them there and 256
	// where a process event's truesize is 832). Datagrams of other sizes
	// are charged their own truesize (see Options.QueueLen).
	DefaultQueueLen = 256

	// minRcvBuf and minSndBuf are SOCK_MIN_RCVBUF and SOCK_MIN_SNDBUF on
	// x86_64 (include/net/sock.h): the smallest buffers the kernel keeps.
	minRcvBuf = 2304
	minSndBuf = 4608
	// defaultSndBuf is net.core.wmem_default.
	defaultSndBuf = 212992
	// DefaultMemMax is the kernel's default net.core.rmem_max and
	// net.core.wmem_max on 64-bit systems (SK_RMEM_MAX, SK_WMEM_MAX): the
	// default of [Options.RmemMax] and [Options.WmemMax].
	DefaultMemMax = 212992

	// firstPort is the port id of the first socket; later ones get ids with
	// the top bit set, as the kernel hands out negative ids once a
	// process's first socket has taken its tgid.
	firstPort = 1000
	laterPort = 0x80000000

	// maxRecorded bounds the requests and rejections a Kernel keeps.
	maxRecorded = 4096
)

// Options configure a fake kernel. The zero value is a kernel in the initial
// network namespace with DefaultQueueLen and DefaultMemMax. A value out of
// range makes every Dial on the Kernel fail with an error matching
// [connector.ErrInvalidConfig] that names it.
type Options struct {
	// QueueLen sets each socket's receive buffer to room for QueueLen
	// process events: QueueLen times their truesize (Kernel.TrueSize of a
	// 76-byte datagram: 960 bytes with the defaults, 768 before Linux 6.3).
	// Every queued datagram is charged its truesize against the buffer, as
	// the kernel charges it (the allocator object holding it, plus the
	// sk_buff: the small-head cache's object up to 384-byte datagrams with
	// the defaults, 2304 bytes for a 1200-byte one), and a datagram is
	// queued when the queue is empty or the charges, its own included,
	// stay within the buffer (netlink_broadcast_deliver and
	// netlink_attachskb in net/netlink/af_netlink.c, since the stable
	// releases of July 2025). Past that, kernel and multicast messages are
	// dropped and a userspace unicast's sender has to wait. The buffer must
	// fit the kernel's int; 0 means DefaultQueueLen. Conn.SetReadBuffer and
	// Config.ReadBufferSize set the buffer in bytes per socket.
	QueueLen int

	// RmemMax and WmemMax are net.core.rmem_max and net.core.wmem_max in
	// bytes: the caps on SetReadBuffer and SetWriteBuffer for sockets
	// opened with DialUnprivileged. 0 means DefaultMemMax; read
	// /proc/sys/net/core/rmem_max to model a given machine.
	RmemMax, WmemMax int

	// NotInitialNetNS makes the fake behave like a network namespace other
	// than the initial one, where the kernel side of the connector does
	// not exist: every send to the kernel (port 0), and every multicast,
	// which the kernel also hands to port 0, fails with ECONNREFUSED
	// ([connector.ErrNotInitialNetNS]) after delivering to userspace peers,
	// and handlers are never called. Multicast, Unicast and InjectRaw
	// still deliver: they are the test's own injection tools.
	NotInitialNetNS bool

	// Release is the kernel release whose receive buffer accounting the
	// fake follows, such as "6.1" or a full uname release: before 6.3
	// there is no small-head cache, and a small datagram's head is a
	// 512-byte kmalloc object (truesize 768). "" means the newest known
	// model (7.3).
	Release string

	// SmallHeadCache is SKB_SMALL_HEAD_CACHE_SIZE of the modelled kernel
	// (Linux 6.3 and later): the object size, in bytes, of the cache that
	// holds every datagram head of at most that size. It depends on the
	// kernel's configuration (SKB_HEAD_ALIGN(MAX_TCP_HEADER), and
	// MAX_TCP_HEADER grows with the link layers and tunnels built in): 704
	// on Debian's x86_64 kernels, 576 on smaller configurations. A
	// datagram's truesize (/proc/net/netlink's Rmem after one 76-byte
	// datagram is queued) less 256 gives it. 0 means
	// DefaultSmallHeadCache; otherwise a multiple of 64 from 384 to 4096.
	SmallHeadCache int
}

// A HandlerFunc is a fake kernel agent: it is called with every well-formed
// message sent to the kernel for the id it was registered for, and with the
// sender's port and, for a multicast, group. The replies it returns are
// delivered before the sender's Send returns, as the kernel runs connector
// callbacks synchronously in the sender's system call. req.Data belongs to
// the handler.
//
// Handlers run on the sending goroutine without any lock held, so they may
// call the Kernel's methods; handlers for ids that several goroutines send
// to must be safe for concurrent use.
type HandlerFunc func(req connector.Message, from connector.Sender) []Reply

// A Reply is a message a fake kernel agent sends, shaped as the kernel does
// (netlink type NLMSG_DONE, flags 0, nlmsg_seq = Message.Seq, nlmsg_pid 0,
// sender port 0).
type Reply struct {
	Message connector.Message
	// Group, if not 0, multicasts the reply to every socket in the group
	// (the requester too, if it joined), as the process events connector
	// sends its acknowledgements. If 0, the reply is unicast to the
	// requester, as w1 replies.
	Group connector.Group
	// Filter, if not nil, is asked for each member of Group (by port id)
	// whether it gets the reply, as netlink_broadcast_filtered asks the
	// agent's filter: the process events connector uses one to apply each
	// socket's event filter. It is called without locks held.
	Filter func(port uint32) bool
}

// A Request is a message that reached the fake kernel (port 0).
type Request struct {
	// Message is the decoded cn_msg; Data is a copy.
	Message connector.Message
	// From is the sender: its port and, if it was multicast (which the
	// kernel also hands to port 0), the group.
	From connector.Sender
	// Header is the netlink header as the sender wrote it.
	Header NetlinkHeader
	// Raw is the whole datagram as sent.
	Raw []byte
	// Handled reports whether a handler was registered for Message.ID. The
	// real kernel drops messages for ids nobody registered, silently.
	Handled bool
}

// A Rejection is a datagram sent to the kernel that the real kernel would
// drop as malformed, silently; the fake records why.
type Rejection struct {
	Raw    []byte
	From   connector.Sender
	Reason string
}

// A Kernel is a fake connector: the kernel side of NETLINK_CONNECTOR and
// the netlink sockets attached to it, in one process and without
// privileges. Conns from Dial talk to it instead of a real socket.
//
// The fake follows the kernel's rules where a program can observe them:
// port ids and sender addresses, group membership (numbers 1 to 32),
// delivery of userspace unicast and multicast (the sender never receives its
// own multicast; with several group bits only the lowest counts; a multicast
// is also handed to the kernel), validation of what is sent to the kernel,
// bounded receive queues with ENOBUFS overruns and congestion, truncation of
// datagrams larger than a Conn's MessageBufferSize, deadlines and Close.
// Every datagram a Conn receives is built byte for byte as the kernel builds
// it, by an encoder of this package's own.
//
// A Kernel is safe for concurrent use. Its zero value is not usable; call
// New: Dial on a zero (or nil) Kernel fails with an error saying so, and
// Handle panics with that message.
type Kernel struct {
	opts   Options
	optErr error // an Options value out of range, reported by Dial

	mu        sync.Mutex
	socks     map[uint32]*socket
	nsocks    uint32 // sockets ever opened, for port ids
	handlers  map[connector.CBID]HandlerFunc
	requests  []Request
	rejected  []Rejection
	replyErrs []error
	// smallHead is the modelled small-head cache's object size (0:
	// none); queueUnit the truesize of a process event.
	smallHead, queueUnit int
	scratch              []byte        // encoding buffer for kernel sends, under mu
	changed              chan struct{} // closed and replaced when a receive starts waiting or a send is refused
}

// New returns a fake kernel configured by opts; nil means the defaults.
func New(opts *Options) *Kernel {
	var o Options
	if opts != nil {
		o = *opts
	}
	optErr := o.check()
	if o.QueueLen <= 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.RmemMax <= 0 {
		o.RmemMax = DefaultMemMax
	}
	if o.WmemMax <= 0 {
		o.WmemMax = DefaultMemMax
	}
	major, minor, _ := parseRelease(o.Release)
	sh := smallHead(major, minor, o.SmallHeadCache)
	return &Kernel{
		opts:      o,
		optErr:    optErr,
		smallHead: sh,
		// A process event's charge: what QueueLen counts in.
		queueUnit: trueSize(procEventLen, false, sh),
		socks:     make(map[uint32]*socket),
		handlers:  make(map[connector.CBID]HandlerFunc),
		changed:   make(chan struct{}),
	}
}

// check range-checks the options before defaults are filled in.
func (o *Options) check() error {
	switch {
	case o.SmallHeadCache != 0 && (o.SmallHeadCache < 384 || o.SmallHeadCache > 4096 || o.SmallHeadCache%64 != 0):
		return fmt.Errorf("cntest: dial: %w: Options.SmallHeadCache is %d; it must be a multiple of 64 from 384 to 4096 bytes, or 0 for DefaultSmallHeadCache", connector.ErrInvalidConfig, o.SmallHeadCache)
	case o.RmemMax < 0 || int64(o.RmemMax) > connector.MaxBufferSize:
		return fmt.Errorf("cntest: dial: %w: Options.RmemMax is %d; it must be 0 to %d bytes", connector.ErrInvalidConfig, o.RmemMax, int64(connector.MaxBufferSize))
	case o.WmemMax < 0 || int64(o.WmemMax) > connector.MaxBufferSize:
		return fmt.Errorf("cntest: dial: %w: Options.WmemMax is %d; it must be 0 to %d bytes", connector.ErrInvalidConfig, o.WmemMax, int64(connector.MaxBufferSize))
	}
	major, minor, err := parseRelease(o.Release)
	if err != nil {
		return err
	}
	if charge := trueSize(procEventLen, false, smallHead(major, minor, o.SmallHeadCache)); o.QueueLen < 0 || int64(o.QueueLen)*int64(charge) > connector.MaxBufferSize {
		return fmt.Errorf("cntest: dial: %w: Options.QueueLen is %d; it must be 1 to %d process events (%d bytes each, the buffer must fit the kernel's int), or 0 for DefaultQueueLen", connector.ErrInvalidConfig, o.QueueLen, connector.MaxBufferSize/charge, charge)
	}
	return nil
}

// smallHead is the modelled kernel's small-head cache object size: 0 before
// Linux 6.3, which has none.
func smallHead(major, minor, size int) int {
	switch {
	case major < 6 || major == 6 && minor < 3:
		return 0
	case size == 0:
		return DefaultSmallHeadCache
	}
	return size
}

// Dial opens a Conn on the fake kernel, as a process with CAP_NET_ADMIN.
// Config.NetNS is not supported (see [Options.NotInitialNetNS]); every other
// field works as with connector.Dial.
func (k *Kernel) Dial(cfg *connector.Config) (*connector.Conn, error) {
	return k.dial(cfg, true)
}

// DialUnprivileged opens a Conn as a process without CAP_NET_ADMIN on Linux
// 6.6 or later: joining an even-numbered group, sending to a userspace port
// and multicasting fail with EPERM (matching os.ErrPermission), and
// SetReadBuffer is capped at twice net.core.rmem_max.
func (k *Kernel) DialUnprivileged(cfg *connector.Config) (*connector.Conn, error) {
	return k.dial(cfg, false)
}

// errZero is the error of Dial on a Kernel that New did not make.
var errZero = errors.New("cntest: a zero Kernel is not usable: make one with cntest.New")

// made reports whether New made k.
func (k *Kernel) made() bool { return k != nil && k.socks != nil }

func (k *Kernel) dial(cfg *connector.Config, priv bool) (*connector.Conn, error) {
	if !k.made() {
		return nil, errZero
	}
	if k.optErr != nil {
		return nil, k.optErr
	}
	netns := cfg != nil && cfg.NetNS > 0
	// The Conn checks cfg, then calls open with the groups' bind mask,
	// as [connector.Dial] opens a socket: both map the errors alike.
	open := func(mask uint32) (transport.Transport, error) {
		if netns {
			return nil, transport.ErrUnsupported
		}
		if !joinAllowed(mask, priv) {
			return nil, os.NewSyscallError("bind", syscall.EPERM)
		}
		return k.newSocket(mask, priv), nil
	}
	c, err := transport.NewConn(open, cfg)
	if err != nil {
		return nil, err
	}
	return c.(*connector.Conn), nil
}

// joinAllowed applies cn_bind (drivers/connector/connector.c, Linux 6.6) to
// a bitmask of groups: without CAP_NET_ADMIN only groups whose number has
// bit 0 set may be joined. The kernel means to allow only group 1 but tests
// the number as a mask.
func joinAllowed(mask uint32, priv bool) bool {
	if priv {
		return true
	}
	for g := connector.Group(1); g <= connector.MaxGroup; g++ {
		if mask&g.Mask() != 0 && g%2 == 0 {
			return false
		}
	}
	return true
}

func (k *Kernel) newSocket(mask uint32, priv bool) *socket {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nsocks++
	port := uint32(firstPort)
	if k.nsocks > 1 {
		port = laterPort + k.nsocks - 1
	}
	s := &socket{
		k:      k,
		port:   port,
		priv:   priv,
		groups: mask,
		rcvbuf: k.opts.QueueLen * k.queueUnit,
		sndbuf: defaultSndBuf,
		wake:   make(chan struct{}, 1),
		room:   make(chan struct{}),
		done:   make(chan struct{}),
		dlc:    make(chan struct{}),
	}
	k.socks[port] = s
	return s
}

// Handle registers h as the fake kernel agent for id, replacing any earlier
// one; a nil h unregisters it. Messages sent to the kernel for ids without a
// handler are dropped, as the real kernel drops them (Requests still lists
// them).
func (k *Kernel) Handle(id connector.CBID, h HandlerFunc) {
	if !k.made() {
		panic(errZero.Error())
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if h == nil {
		delete(k.handlers, id)
		return
	}
	k.handlers[id] = h
}

// Multicast sends each message, as the kernel agent for its id would, to
// every socket that joined group g, one datagram per message. A socket whose
// queue is full, or congested after an overrun, does not get it: the message
// is dropped there and the socket's next receive fails with ENOBUFS
// ([connector.ErrOverrun]), unless it set NoENOBUFS. It returns how many
// datagrams were queued, and an error only for an invalid group or a payload
// longer than 65535 bytes.
func (k *Kernel) Multicast(g connector.Group, msgs ...connector.Message) (int, error) {
	if !g.Valid() {
		return 0, fmt.Errorf("cntest: multicast: %w: group %d is out of range 1 to %d", connector.ErrInvalidGroup, uint32(g), connector.MaxGroup)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	queued := 0
	for _, m := range msgs {
		b, err := appendKernel(k.scratch[:0], m)
		k.scratch = b[:0]
		if err != nil {
			return queued, err
		}
		queued += k.broadcastLocked(b, 0, g, nil, 0)
	}
	return queued, nil
}

// Unicast sends each message, as a kernel agent would, to the socket with
// the given port id, one datagram per message. If that socket's queue is
// full or congested the message is dropped and the socket's next receive
// fails with ENOBUFS, and Unicast returns an error matching syscall.EAGAIN
// (what the kernel agent gets). It fails with syscall.ECONNREFUSED if no
// socket has that port id.
func (k *Kernel) Unicast(port uint32, msgs ...connector.Message) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.socks[port]
	if s == nil {
		return fmt.Errorf("cntest: unicast: no socket has port id %d: %w", port, syscall.ECONNREFUSED)
	}
	for _, m := range msgs {
		b, err := appendKernel(k.scratch[:0], m)
		k.scratch = b[:0]
		if err != nil {
			return err
		}
		if err := s.enqueueLocked(b, 0, 0, true); err != nil {
			return fmt.Errorf("cntest: unicast to port %d: receive queue full, message dropped: %w", port, err)
		}
	}
	return nil
}

// InjectRaw queues datagram, byte for byte, on the socket with the given
// port id, with from as its source address: use it for malformed bytes and
// for spoofed senders (a userspace port on a kernel group, say). Queueing
// follows the kernel: if the queue is full or congested, a unicast from a
// userspace port fails with syscall.EAGAIN and is not queued, and anything
// else is dropped with an overrun reported to the socket (and an error
// matching syscall.ENOBUFS returned here). It fails with
// syscall.ECONNREFUSED if no socket has that port id.
func (k *Kernel) InjectRaw(port uint32, from connector.Sender, datagram []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.socks[port]
	if s == nil {
		return fmt.Errorf("cntest: inject: no socket has port id %d: %w", port, syscall.ECONNREFUSED)
	}
	if from.Group != 0 && !from.Group.Valid() {
		return fmt.Errorf("cntest: inject: %w: sender group %d is out of range 1 to %d", connector.ErrInvalidGroup, uint32(from.Group), connector.MaxGroup)
	}
	overrun := from.Port == 0 || from.Group != 0
	if err := s.enqueueLocked(datagram, from.Port, from.Group.Mask(), overrun); err != nil {
		return fmt.Errorf("cntest: inject to port %d: receive queue full: %w", port, err)
	}
	return nil
}

// Overrun makes the socket with the given port id behave as if the kernel
// had just dropped a message for it because its buffer was full: the next
// receive fails with ENOBUFS ([connector.ErrOverrun]) before any queued
// datagram, once, and the socket is congested (new kernel and multicast
// messages are dropped) until its queue has been read empty. With
// NoENOBUFS set only the drop is counted. It fails with
// syscall.ECONNREFUSED if no socket has that port id.
func (k *Kernel) Overrun(port uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.socks[port]
	if s == nil {
		return fmt.Errorf("cntest: overrun: no socket has port id %d: %w", port, syscall.ECONNREFUSED)
	}
	s.overrunLocked()
	return nil
}

// Requests returns the messages that reached the kernel (port 0), oldest
// first: the last 4096 of them.
func (k *Kernel) Requests() []Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	return lastRecorded(k.requests)
}

// Rejected returns the datagrams sent to the kernel that the real kernel
// would have dropped as malformed, with the reason, oldest first: the last
// 4096 of them.
func (k *Kernel) Rejected() []Rejection {
	k.mu.Lock()
	defer k.mu.Unlock()
	return lastRecorded(k.rejected)
}

// Ports returns the port ids of the open sockets, in increasing order.
func (k *Kernel) Ports() []uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	ports := make([]uint32, 0, len(k.socks))
	for p := range k.socks {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// Members returns the port ids of the open sockets that joined group g, in
// increasing order.
func (k *Kernel) Members(g connector.Group) []uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	var ports []uint32
	for p, s := range k.socks {
		if s.groups&g.Mask() != 0 {
			ports = append(ports, p)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// Queued returns the number of datagrams waiting in the queue of the socket
// with the given port id (0 if there is no such socket).
func (k *Kernel) Queued(port uint32) int {
	var v int
	k.withSocket(port, func(s *socket) { v = s.q.n })
	return v
}

// Drops returns how many messages were dropped for the socket with the
// given port id because its queue was full or congested: the Drops column
// of /proc/net/netlink.
func (k *Kernel) Drops(port uint32) uint64 {
	var v uint64
	k.withSocket(port, func(s *socket) { v = s.drops })
	return v
}

// Refused returns how many userspace unicasts to the socket with the given
// port id were refused because its queue was full or congested. Each refusal
// is a sender told to wait for room (EAGAIN); a Conn retries until its write
// deadline.
func (k *Kernel) Refused(port uint32) uint64 {
	var v uint64
	k.withSocket(port, func(s *socket) { v = s.refused })
	return v
}

// Waiting returns how many receives are blocked waiting for data on the
// socket with the given port id (0 if there is no such socket).
func (k *Kernel) Waiting(port uint32) int {
	var v int
	k.withSocket(port, func(s *socket) { v = s.waiting })
	return v
}

// WaitReceiving blocks until a receive on the socket with the given port id
// is waiting for data, or timeout passes, and reports which happened. Tests
// use it to act (Close, inject, change a deadline) exactly when a reader is
// blocked, instead of sleeping.
func (k *Kernel) WaitReceiving(port uint32, timeout time.Duration) bool {
	return k.waitUntil(timeout, func() bool {
		s := k.socks[port]
		return s != nil && s.waiting > 0
	})
}

// WaitRefused blocks until Refused(port) exceeds n, or timeout passes, and
// reports which happened: a test can then act while a sender is waiting for
// room in that socket's queue.
func (k *Kernel) WaitRefused(port uint32, n uint64, timeout time.Duration) bool {
	return k.waitUntil(timeout, func() bool {
		s := k.socks[port]
		return s != nil && s.refused > n
	})
}

// withSocket calls f with k.mu held on the socket with the given port id,
// if there is one.
func (k *Kernel) withSocket(port uint32, f func(*socket)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s := k.socks[port]; s != nil {
		f(s)
	}
}

// waitUntil waits until cond, called with k.mu held, is true or timeout
// passes.
func (k *Kernel) waitUntil(timeout time.Duration, cond func() bool) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		k.mu.Lock()
		if cond() {
			k.mu.Unlock()
			return true
		}
		ch := k.changed
		k.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return false
		}
	}
}

// notifyLocked wakes the Wait methods to check their conditions again.
func (k *Kernel) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// broadcastLocked delivers p to the members of group g except the sockets
// with port ids exclude and skip (0: none), as netlink_broadcast does, and
// returns how many queued it.
func (k *Kernel) broadcastLocked(p []byte, fromPort uint32, g connector.Group, exclude *socket, skip uint32) int {
	n := 0
	mask := g.Mask()
	for port, s := range k.socks {
		if s == exclude || (skip != 0 && port == skip) || s.groups&mask == 0 {
			continue
		}
		if s.enqueueLocked(p, fromPort, mask, true) == nil {
			n++
		}
	}
	return n
}

// input is the kernel's receive path (cn_rx_skb): decode, record, and run
// the handler for the message's id, delivering its replies.
func (k *Kernel) input(p []byte, from connector.Sender) {
	h, m, reason := parseInput(p)
	raw := append([]byte(nil), p...)
	k.mu.Lock()
	if reason != "" {
		k.rejected = appendBounded(k.rejected, Rejection{Raw: raw, From: from, Reason: reason})
		k.mu.Unlock()
		return
	}
	fn := k.handlers[m.ID]
	k.requests = appendBounded(k.requests, Request{Message: m, From: from, Header: h, Raw: raw, Handled: fn != nil})
	k.mu.Unlock()
	if fn == nil {
		return
	}
	req := m
	req.Data = append([]byte(nil), m.Data...)
	for _, r := range fn(req, from) {
		k.reply(r, from.Port)
	}
}

// reply delivers a handler's reply as the kernel agent would send it.
// Errors (nobody listening, a full queue) are what the agent would get and
// does not pass on.
func (k *Kernel) reply(r Reply, requester uint32) {
	// A reply that cannot be built is the handler's bug, not the kernel's
	// behaviour: it is recorded for ReplyErrors instead of vanishing.
	if _, err := Datagram(r.Message); err != nil || (r.Group != 0 && !r.Group.Valid()) {
		if err == nil {
			err = fmt.Errorf("cntest: reply: %w: group %d is out of range 1 to %d", connector.ErrInvalidGroup, uint32(r.Group), connector.MaxGroup)
		}
		k.mu.Lock()
		k.replyErrs = appendBounded(k.replyErrs, fmt.Errorf("reply to port %d, id %v: %w", requester, r.Message.ID, err))
		k.mu.Unlock()
		return
	}
	switch {
	case r.Group != 0 && r.Filter != nil:
		d, _ := Datagram(r.Message)
		for _, port := range k.Members(r.Group) {
			if r.Filter(port) {
				_ = k.InjectRaw(port, connector.Sender{Group: r.Group}, d)
			}
		}
	case r.Group != 0:
		_, _ = k.Multicast(r.Group, r.Message)
	default:
		_ = k.Unicast(requester, r.Message)
	}
}

// ReplyErrors returns the errors of replies that handlers returned but that
// could not be sent as built (a payload longer than 65535 bytes, a group out
// of range), oldest first: the last 4096. They are bugs in the handlers. A
// reply dropped because its receiver's queue was full is the kernel's own
// behaviour and is not listed (see Drops).
func (k *Kernel) ReplyErrors() []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return lastRecorded(k.replyErrs)
}

// appendBounded appends v, keeping at least the last maxRecorded entries:
// the slice is cut back to that many once it holds twice as many, so that
// appending stays cheap. Use lastRecorded to read it.
func appendBounded[T any](s []T, v T) []T {
	if len(s) >= 2*maxRecorded {
		s = append([]T(nil), s[len(s)-maxRecorded:]...)
	}
	return append(s, v)
}

// lastRecorded returns a copy of the last maxRecorded entries of s.
func lastRecorded[T any](s []T) []T {
	return append([]T(nil), s[max(len(s)-maxRecorded, 0):]...)
}

// send is the fake's sendmsg for a socket: netlink_sendmsg and what it
// calls (netlink_broadcast, netlink_unicast) in net/netlink/af_netlink.c.
func (k *Kernel) send(s *socket, p []byte, port, groups uint32) error {
	k.mu.Lock()
	if s.closed {
		k.mu.Unlock()
		return os.ErrClosed
	}
	switch {
	case len(p) == 0:
		k.mu.Unlock()
		return errNoData
	case len(p) > s.sndbuf-32:
		k.mu.Unlock()
		return syscall.EMSGSIZE
	case (port != 0 || groups != 0) && !s.priv:
		k.mu.Unlock()
		return syscall.EPERM
	}
	var g connector.Group
	if groups != 0 {
		g = lowestGroup(groups)
		k.broadcastLocked(p, s.port, g, s, port)
	}
	if port != 0 {
		dst := k.socks[port]
		var err error
		if dst == nil {
			err = syscall.ECONNREFUSED
		} else {
			err = dst.enqueueLocked(p, s.port, g.Mask(), false)
		}
		k.mu.Unlock()
		return err
	}
	k.mu.Unlock()
	if k.opts.NotInitialNetNS {
		return syscall.ECONNREFUSED
	}
	k.input(p, connector.Sender{Port: s.port, Group: g})
	return nil
}

// lowestGroup returns the group of the lowest bit set in mask: the kernel
// uses only that one (ffs in netlink_sendmsg).
func lowestGroup(mask uint32) connector.Group {
	for g := connector.Group(1); g <= connector.MaxGroup; g++ {
		if mask&g.Mask() != 0 {
			return g
		}
	}
	return 0
}
