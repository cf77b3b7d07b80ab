package connector

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnlink/connector/internal/transport"
)

// Protocol is the netlink protocol number of the connector (NETLINK_CONNECTOR
// in include/uapi/linux/netlink.h).
const Protocol = 11

const (
	// DefaultMessageBufferSize is the default size of the buffer that one
	// datagram is read into: room for the largest message the connector
	// carries (a 16384-byte payload plus headers) with margin.
	DefaultMessageBufferSize = 32 << 10
	// DefaultBatchSize is the default number of datagrams a Reader asks the
	// kernel for in one system call.
	DefaultBatchSize = 16

	// MinMessageBufferSize is the smallest Config.MessageBufferSize: a
	// netlink header and a cn_msg header with no payload.
	MinMessageBufferSize = nlmsgHeaderLen + HeaderLen
	// MaxBatchSize is the largest Config.BatchSize: UIO_MAXIOV from
	// include/uapi/linux/uio.h, the most datagrams recvmmsg(2) returns in
	// one call (it silently lowers larger counts).
	MaxBatchSize = 1024
	// MaxBatchBytes bounds the memory of one receive batch,
	// Config.MessageBufferSize times Config.BatchSize (64 MiB): every
	// Reader holds one, allocated up front.
	MaxBatchBytes = 64 << 20
	// MaxBufferSize is the largest socket buffer size SetReadBuffer,
	// SetWriteBuffer and Config.ReadBufferSize accept: the kernel takes
	// the size as a C int. It keeps at most half of it (INT_MAX/2), doubled
	// (net/core/sock.c, __sock_set_rcvbuf).
	MaxBufferSize = 1<<31 - 1
)

// Config configures a Conn. The zero value (or a nil *Config) opens a socket in
// the current network namespace that joins no groups.
type Config struct {
	// Groups are joined when the socket is bound. Joining kernel groups
	// other than odd-numbered ones needs CAP_NET_ADMIN; before Linux 6.6
	// every join does.
	Groups []Group

	// ReadBufferSize sets the socket's receive buffer (SO_RCVBUF) in bytes,
	// which bounds how many messages the kernel queues before it drops (see
	// ErrOverrun). The kernel keeps twice the size, for its bookkeeping,
	// and at least 2304 bytes. With CAP_NET_ADMIN the size is forced past
	// net.core.rmem_max (SO_RCVBUFFORCE); without it the kernel caps it at
	// rmem_max silently. 0 keeps net.core.rmem_default; sizes outside 0 to
	// MaxBufferSize fail Dial with ErrInvalidConfig. Read the applied size
	// back with Conn.ReadBuffer.
	ReadBufferSize int

	// NoENOBUFS sets NETLINK_NO_ENOBUFS: overruns are no longer reported
	// and the socket keeps receiving as soon as there is room. Loss then
	// becomes silent unless the protocol can detect it (package proc counts
	// sequence gaps). Off by default.
	NoENOBUFS bool

	// NetNS, if not 0, is a network namespace file descriptor to open the
	// socket in. The kernel side of the connector exists only in the
	// initial network namespace.
	NetNS int

	// MessageBufferSize is the size in bytes of the buffer one datagram is
	// read into. A larger datagram is reported as ErrTruncated and dropped.
	// 0 means DefaultMessageBufferSize; otherwise it must be at least
	// MinMessageBufferSize, and MessageBufferSize times BatchSize at most
	// MaxBatchBytes.
	MessageBufferSize int

	// BatchSize is the number of datagrams a Reader receives per system
	// call (recvmmsg), 1 to MaxBatchSize. 0 means DefaultBatchSize.
	BatchSize int

	// Senders says whose messages are accepted; the others are dropped and
	// counted in Stats.Foreign. The zero value, SendersDefault, accepts
	// only the kernel on the kernel agents' groups 1 to 10.
	Senders SenderPolicy
}

// A SenderPolicy says which senders a Conn accepts messages from. Messages
// from other senders are dropped and counted in Stats.Foreign, never
// returned. The sender is read from the datagram's source address, which
// the kernel fills in: userspace cannot forge port 0.
type SenderPolicy int

const (
	// SendersDefault accepts only the kernel (port 0) on the groups
	// reserved for kernel agents (1 to 10, see Group.Kernel), where a
	// userspace sender is a spoof of the agent, and anyone on other groups
	// and in unicasts.
	SendersDefault SenderPolicy = iota
	// SendersKernelOnly accepts only the kernel, on every group and in
	// unicasts.
	SendersKernelOnly
	// SendersAny accepts every sender, also userspace senders on the
	// kernel agents' groups.
	SendersAny
)

// Accepts reports whether the policy accepts a message from s.
func (p SenderPolicy) Accepts(s Sender) bool {
	switch {
	case s.Port == 0, p == SendersAny:
		return true
	case p == SendersKernelOnly:
		return false
	}
	return !s.Group.Kernel()
}

func (p SenderPolicy) String() string {
	switch p {
	case SendersDefault:
		return "SendersDefault"
	case SendersKernelOnly:
		return "SendersKernelOnly"
	case SendersAny:
		return "SendersAny"
	}
	return "SenderPolicy(" + strconv.Itoa(int(p)) + ")"
}

func (p SenderPolicy) check() error {
	if p < SendersDefault || p > SendersAny {
		return fmt.Errorf("%w: Config.Senders is %v; use SendersDefault, SendersKernelOnly or SendersAny", ErrInvalidConfig, p)
	}
	return nil
}

// A Sender is the source address of a received message.
type Sender struct {
	// Port is the sender's netlink port id: 0 for the kernel, otherwise a
	// userspace socket. Userspace cannot bind port 0, so Port 0 is proof
	// that the kernel sent the message.
	Port uint32
	// Group is the group the message was multicast on, or 0 for a unicast.
	Group Group
}

// Kernel reports whether the kernel sent the message.
func (s Sender) Kernel() bool { return s.Port == 0 }

func (s Sender) String() string {
	who := "kernel"
	if s.Port != 0 {
		who = fmt.Sprintf("port %d", s.Port)
	}
	if s.Group != 0 {
		return fmt.Sprintf("%s on group %d", who, s.Group)
	}
	return who
}

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
	// Foreign counts datagrams dropped because their sender was not the
	// kernel where Config.Senders required the kernel.
	Foreign uint64
}

// A Conn is a NETLINK_CONNECTOR socket.
//
// A Conn is safe for concurrent use: sends may run alongside receives, and
// Close may be called from any goroutine, which unblocks a pending receive
// promptly. A Reader obtained from NewReader is not safe for concurrent use.
type Conn struct {
	t      transport.Transport
	cfg    Config
	closed atomic.Bool
	port   uint32

	batches sync.Pool                 // *transport.Batch of cfg.BatchSize, for Readers
	singles freeList[transport.Batch] // batches of 1, for Receive
	sendBuf freeList[[]byte]

	wdeadline atomic.Int64 // unix nanoseconds, 0 = none
	flush     flushState
	recvSeen  atomic.Uint64 // the Flush count Receive has seen

	datagrams, messages, overruns, truncated, malformed, foreign atomic.Uint64
}

func init() {
	transport.NewConn = func(t transport.Transport, cfg any) (any, error) {
		c, _ := cfg.(*Config)
		return newConn(t, c)
	}
}

// Dial opens a connector socket. A nil config means the defaults.
func Dial(cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.validate(); err != nil {
		return nil, opErr("dial", err)
	}
	mask, err := GroupMask(cfg.Groups...)
	if err != nil {
		return nil, opErr("dial", err)
	}
	t, err := dial(cfg, mask)
	if err != nil {
		return nil, opErr("dial", mapDialErr(err))
	}
	return newConn(t, cfg)
}

// validate checks every field of cfg: a value out of range is an error
// that names the field, never a silent default.
func (cfg *Config) validate() error {
	if err := cfg.Senders.check(); err != nil {
		return err
	}
	if err := checkBufferSize("Config.ReadBufferSize", cfg.ReadBufferSize); err != nil {
		return err
	}
	if cfg.NetNS < 0 {
		return fmt.Errorf("%w: Config.NetNS is %d; give a network namespace file descriptor, or 0 for the current namespace", ErrInvalidConfig, cfg.NetNS)
	}
	size, n := cfg.MessageBufferSize, cfg.BatchSize
	if size == 0 {
		size = DefaultMessageBufferSize
	}
	if n == 0 {
		n = DefaultBatchSize
	}
	switch {
	case size < MinMessageBufferSize:
		return fmt.Errorf("%w: Config.MessageBufferSize is %d; it must be at least %d bytes (a netlink and a cn_msg header), or 0 for the default %d", ErrInvalidConfig, cfg.MessageBufferSize, MinMessageBufferSize, DefaultMessageBufferSize)
	case n < 1 || n > MaxBatchSize:
		return fmt.Errorf("%w: Config.BatchSize is %d; it must be 1 to %d (UIO_MAXIOV, the most datagrams recvmmsg returns), or 0 for the default %d", ErrInvalidConfig, cfg.BatchSize, MaxBatchSize, DefaultBatchSize)
	case uint64(size)*uint64(n) > MaxBatchBytes:
		return fmt.Errorf("%w: Config.MessageBufferSize %d times Config.BatchSize %d is %d bytes, above the %d bytes (MaxBatchBytes) one receive batch may hold", ErrInvalidConfig, size, n, uint64(size)*uint64(n), MaxBatchBytes)
	}
	return nil
}

// checkBufferSize checks a socket buffer size in bytes before it reaches
// the kernel, which takes a C int: a larger value would be cut to 32 bits.
func checkBufferSize(what string, n int) error {
	if n < 0 || int64(n) > MaxBufferSize {
		return fmt.Errorf("%w: %s is %d; it must be 0 to %d bytes (the kernel takes a C int)", ErrInvalidConfig, what, n, int64(MaxBufferSize))
	}
	return nil
}

func newConn(t transport.Transport, cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.validate(); err != nil {
		_ = t.Close()
		return nil, opErr("dial", err)
	}
	c := &Conn{t: t, port: t.PortID(), cfg: *cfg}
	c.cfg.Groups = append([]Group(nil), cfg.Groups...)
	if c.cfg.MessageBufferSize == 0 {
		c.cfg.MessageBufferSize = DefaultMessageBufferSize
	}
	if c.cfg.BatchSize == 0 {
		c.cfg.BatchSize = DefaultBatchSize
	}
	size, n := c.cfg.MessageBufferSize, c.cfg.BatchSize
	c.batches.New = func() any { return transport.NewBatch(n, size) }
	c.singles.new = func() *transport.Batch { return transport.NewBatch(1, size) }
	c.sendBuf.new = func() *[]byte { b := make([]byte, 0, 512); return &b }

	if c.cfg.ReadBufferSize > 0 {
		if err := c.SetReadBuffer(c.cfg.ReadBufferSize); err != nil {
			_ = t.Close()
			return nil, err
		}
	}
	if c.cfg.NoENOBUFS {
		if err := c.SetNoENOBUFS(true); err != nil {
			_ = t.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the socket. A receive blocked in another goroutine returns
// promptly with an error matching ErrClosed, as does every later call.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return &OpError{Op: "close", Err: ErrClosed}
	}
	return opErr("close", c.t.Close())
}

// PortID returns the socket's netlink port id, the address userspace peers
// send unicast messages to.
func (c *Conn) PortID() uint32 { return c.port }

// Config returns the configuration the Conn runs with, defaults filled in.
func (c *Conn) Config() Config {
	cfg := c.cfg
	cfg.Groups = append([]Group(nil), c.cfg.Groups...)
	return cfg
}

// Stats returns the receive counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Datagrams: c.datagrams.Load(),
		Messages:  c.messages.Load(),
		Overruns:  c.overruns.Load(),
		Truncated: c.truncated.Load(),
		Malformed: c.malformed.Load(),
		Foreign:   c.foreign.Load(),
	}
}

func (c *Conn) checkOpen(op string) error {
	if c.closed.Load() {
		return &OpError{Op: op, Err: ErrClosed}
	}
	return nil
}

// JoinGroup joins multicast group g (setsockopt NETLINK_ADD_MEMBERSHIP with
// the group number). Without CAP_NET_ADMIN only odd-numbered groups can be
// joined, and only on Linux 6.6 and later; the error then matches
// os.ErrPermission.
func (c *Conn) JoinGroup(g Group) error {
	if err := c.checkOpen("join group"); err != nil {
		return err
	}
	if err := g.check(); err != nil {
		return opErr("join group", err)
	}
	return opErr("join group", c.mapErr(c.t.Join(uint32(g)), "join group"))
}

// LeaveGroup leaves multicast group g.
func (c *Conn) LeaveGroup(g Group) error {
	if err := c.checkOpen("leave group"); err != nil {
		return err
	}
	if err := g.check(); err != nil {
		return opErr("leave group", err)
	}
	return opErr("leave group", c.mapErr(c.t.Leave(uint32(g)), "leave group"))
}

// Groups returns the groups the socket is a member of
// (NETLINK_LIST_MEMBERSHIPS).
func (c *Conn) Groups() ([]Group, error) {
	if err := c.checkOpen("list groups"); err != nil {
		return nil, err
	}
	m, err := c.t.Memberships()
	if err != nil {
		return nil, opErr("list groups", c.mapErr(err, "list groups"))
	}
	return GroupsFromMask(m), nil
}

// Send sends m to the kernel (port 0), where the agent registered for m.ID
// receives it. Anyone may send to the kernel; each agent checks privileges
// itself. The payload may be at most MaxKernelPayload bytes: the kernel
// silently drops larger messages. The error matches ErrNotInitialNetNS when
// the socket is not in the initial network namespace.
func (c *Conn) Send(m Message) error {
	if len(m.Data) > MaxKernelPayload {
		return &OpError{Op: "send", Err: fmt.Errorf("%w: payload of %d bytes exceeds the %d bytes the kernel accepts (CONNECTOR_MAX_MSG_SIZE minus the header); the kernel would drop it silently", ErrMessageTooLarge, len(m.Data), MaxKernelPayload)}
	}
	return c.send("send", m, 0, 0)
}

// SendTo sends m by unicast to the userspace socket with the given port id.
// This needs CAP_NET_ADMIN (the error matches os.ErrPermission otherwise). If
// the receiver's buffer is full the call waits for room, until the write
// deadline.
func (c *Conn) SendTo(port uint32, m Message) error {
	if port == 0 {
		return c.Send(m)
	}
	return c.send("send", m, port, 0)
}

// Multicast sends m to every other socket that joined group g (the sender
// never receives its own multicast). This needs CAP_NET_ADMIN. The kernel also
// hands the message to the kernel agent registered for m.ID, if any, which is
// why a multicast from outside the initial network namespace fails with
// ErrNotInitialNetNS after it was delivered to the group.
func (c *Conn) Multicast(g Group, m Message) error {
	if err := g.check(); err != nil {
		return opErr("multicast", err)
	}
	return c.send("multicast", m, 0, g.Mask())
}

func (c *Conn) send(op string, m Message, port, groups uint32) error {
	if err := c.checkOpen(op); err != nil {
		return err
	}
	bp := c.sendBuf.get()
	b, err := appendNetlink((*bp)[:0], m, c.port)
	if err != nil {
		c.sendBuf.put(bp)
		return opErr(op, err)
	}
	err = c.sendRetry(b, port, groups)
	// appendNetlink bounds the payload by MaxMessageSize, so a grown
	// buffer stays small enough to keep.
	*bp = b
	c.sendBuf.put(bp)
	if err != nil {
		return opErr(op, c.mapSendErr(err, port))
	}
	return nil
}

// sendRetry sends, waiting while a unicast receiver's queue is full
// (EAGAIN) until there is room, the Conn is closed or the write deadline
// passes. Transports that can wait in the kernel (sendWaiter) do so in
// short slices; others are retried with a backoff.
func (c *Conn) sendRetry(b []byte, port, groups uint32) error {
	err := c.t.Send(b, port, groups)
	if !errors.Is(err, syscall.EAGAIN) {
		return err
	}
	w, canWait := c.t.(sendWaiter)
	backoff := time.Duration(0)
	for try := 0; ; try++ {
		if c.closed.Load() {
			return ErrClosed
		}
		if d := c.wdeadline.Load(); d != 0 && time.Now().UnixNano() >= d {
			return errDeadline
		}
		switch {
		case try < sendSpins:
			// A receiver that is reading makes room within microseconds:
			// yielding is cheaper than sleeping in the kernel.
			runtime.Gosched()
			err = c.t.Send(b, port, groups)
		case canWait:
			err = w.SendWait(b, port, groups)
		default:
			if backoff == 0 {
				backoff = 5 * time.Microsecond
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Millisecond)
			err = c.t.Send(b, port, groups)
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// sendSpins is how many times a send to a full receiver yields and retries
// before it waits.
const sendSpins = 4

// A sendWaiter is a transport that can wait in the kernel for room in a
// full unicast receiver, for a bounded time (EAGAIN after it).
type sendWaiter interface {
	SendWait(p []byte, port, groups uint32) error
}

// Receive reads one datagram and returns the messages it holds, which the
// caller owns, with their sender. It allocates; for the allocation-free path
// use NewReader. Messages that the Conn's sender policy rejects are dropped,
// counted in Stats, and Receive waits for the next datagram.
//
// Errors matching ErrOverrun, ErrTruncated and ErrMalformed leave the Conn
// usable: call Receive again. When a datagram holds valid messages followed
// by bytes that are not a valid message, Receive returns the valid messages
// together with the error matching ErrMalformed: as with io.Reader, process
// the messages before considering the error.
func (c *Conn) Receive() ([]Message, Sender, error) {
	b := c.singles.get()
	defer c.singles.put(b)
	for {
		if err := c.checkOpen("receive"); err != nil {
			return nil, Sender{}, err
		}
		n, err := c.fill(b, &c.recvSeen)
		if err != nil {
			return nil, Sender{}, c.recvErr(err)
		}
		if n == 0 {
			continue
		}
		c.datagrams.Add(1)
		msgs, from, ok, err := c.parseDatagram(b.Bufs[0], b.Meta[0])
		if !ok && err == nil {
			continue
		}
		c.messages.Add(uint64(len(msgs)))
		return msgs, from, err
	}
}

// parseDatagram checks and decodes one datagram for Receive, copying the
// payloads into one caller-owned slice.
func (c *Conn) parseDatagram(buf []byte, meta transport.Meta) ([]Message, Sender, bool, error) {
	var d datagram
	from, ok, err := c.admit(&d, buf, meta)
	if err != nil || !ok {
		return nil, from, ok, err
	}
	owned := append([]byte(nil), d.rest...)
	d.rest = owned
	var msgs []Message
	for {
		var m Message
		more, err := d.next(&m)
		if err != nil {
			c.malformed.Add(1)
			return msgs, from, true, &OpError{Op: "receive", Err: withSender(err, from)}
		}
		if !more {
			break
		}
		msgs = append(msgs, m)
	}
	return msgs, from, true, nil
}

// admit applies the truncation and sender checks to a datagram and prepares
// d for walking its messages. ok is false when the datagram was dropped.
func (c *Conn) admit(d *datagram, buf []byte, meta transport.Meta) (Sender, bool, error) {
	from := Sender{Port: meta.Port, Group: groupFromMask(meta.Groups)}
	if !c.cfg.Senders.Accepts(from) {
		c.foreign.Add(1)
		return from, false, nil
	}
	if meta.Trunc || meta.N > len(buf) {
		c.truncated.Add(1)
		return from, false, &OpError{Op: "receive", Err: &causeError{kind: ErrTruncated, errno: syscall.EMSGSIZE,
			msg: fmt.Sprintf("datagram of %d bytes from %v is larger than the %d-byte message buffer and was discarded; raise Config.MessageBufferSize", meta.N, from, len(buf))}}
	}
	d.reset(buf[:meta.N])
	return from, true, nil
}

func withSender(err error, from Sender) error {
	var me *MessageError
	if errors.As(err, &me) {
		me.Sender, me.HasSender = from, true
	}
	return err
}

func (c *Conn) recvErr(err error) error {
	if c.closed.Load() {
		return &OpError{Op: "receive", Err: ErrClosed}
	}
	if errors.Is(err, syscall.ENOBUFS) {
		c.overruns.Add(1)
	}
	return opErr("receive", c.mapErr(err, "receive"))
}

// mapErr turns system errors into errors that say what to do.
func (c *Conn) mapErr(err error, op string) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() {
		return ErrClosed
	}
	switch {
	case errors.Is(err, syscall.ENOBUFS):
		return &causeError{kind: ErrOverrun, errno: err, msg: ErrOverrun.Error()}
	case errors.Is(err, syscall.EPERM):
		return &causeError{kind: err, errno: err, msg: fmt.Sprintf("%v: %s needs CAP_NET_ADMIN (joining a group without it works only for odd-numbered groups on Linux 6.6 and later)", err, op)}
	}
	return err
}

func (c *Conn) mapSendErr(err error, port uint32) error {
	if errors.Is(err, ErrClosed) || c.closed.Load() {
		return ErrClosed
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED) && port == 0:
		return &causeError{kind: ErrNotInitialNetNS, errno: err, msg: ErrNotInitialNetNS.Error()}
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no socket has port id %d (or it is connected to another peer): %w", port, err)
	case errors.Is(err, syscall.EPERM):
		return &causeError{kind: err, errno: err, msg: fmt.Sprintf("%v: sending to a userspace port or a group needs CAP_NET_ADMIN; only messages to the kernel (port 0) are unprivileged", err)}
	}
	return err
}

func mapDialErr(err error) error {
	switch {
	case errors.Is(err, syscall.EPROTONOSUPPORT):
		return &causeError{kind: ErrNoConnector, errno: err, msg: ErrNoConnector.Error()}
	case errors.Is(err, syscall.EPERM):
		return &causeError{kind: err, errno: err, msg: fmt.Sprintf("%v: joining these groups needs CAP_NET_ADMIN (without it, Linux 6.6 and later allow odd-numbered groups only, and older kernels none)", err)}
	}
	return err
}

var errDeadline = fmt.Errorf("write deadline exceeded: %w", os.ErrDeadlineExceeded)

// A freeList hands out reusable objects for the per-call paths (send
// buffers, receive batches). One object waits in a slot, which a goroutine
// calling in a loop always hits; a sync.Pool backs it for concurrent
// callers. The slot keeps steady-state calls allocation-free even under the
// race detector, which makes sync.Pool drop objects at random.
type freeList[T any] struct {
	slot atomic.Pointer[T]
	pool sync.Pool
	new  func() *T
}

func (f *freeList[T]) get() *T {
	if p := f.slot.Swap(nil); p != nil {
		return p
	}
	if p, ok := f.pool.Get().(*T); ok {
		return p
	}
	return f.new()
}

func (f *freeList[T]) put(p *T) {
	if !f.slot.CompareAndSwap(nil, p) {
		f.pool.Put(p)
	}
}
