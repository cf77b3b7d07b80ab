package connector

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

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

	// MinMessageBufferSize is the smallest [Config.MessageBufferSize]: a
	// netlink header and a cn_msg header with no payload.
	MinMessageBufferSize = nlmsgHeaderLen + HeaderLen
	// MaxBatchSize is the largest [Config.BatchSize]: UIO_MAXIOV from
	// include/uapi/linux/uio.h, the most datagrams recvmmsg(2) returns in
	// one call (it silently lowers larger counts).
	MaxBatchSize = 1024
	// MaxBatchBytes bounds the memory of one receive batch,
	// [Config.MessageBufferSize] times [Config.BatchSize] (64 MiB): every
	// Reader holds one, allocated up front.
	MaxBatchBytes = 64 << 20
	// MaxBufferSize is the largest socket buffer size SetReadBuffer,
	// SetWriteBuffer and [Config.ReadBufferSize] accept: the kernel takes
	// the size as a C int. It keeps at most half of it (INT_MAX/2), doubled
	// (net/core/sock.c, __sock_set_rcvbuf).
	MaxBufferSize = 1<<31 - 1
)

// Config configures a Conn. The zero value (or a nil *Config) opens a socket in
// the current network namespace that joins no groups.
type Config struct {
	// Groups are joined when the socket is bound; who may join which group
	// is in the package documentation (Privileges).
	Groups []Group

	// ReadBufferSize sets the socket's receive buffer (SO_RCVBUF) in bytes,
	// which bounds how many messages the kernel queues before it drops (see
	// ErrOverrun), as [Conn.SetReadBuffer] does, with the kernel's
	// arithmetic described there. 0 keeps net.core.rmem_default; sizes
	// outside 0 to MaxBufferSize fail Dial with ErrInvalidConfig.
	ReadBufferSize int

	// NoENOBUFS sets NETLINK_NO_ENOBUFS: overruns are no longer reported
	// and the socket keeps receiving as soon as there is room. Loss then
	// becomes silent unless the protocol can detect it (package proc counts
	// sequence gaps). Off by default.
	NoENOBUFS bool

	// NetNS, if not 0, is a network namespace file descriptor to open the
	// socket in. The kernel side of the connector exists only in the
	// initial network namespace. A negative value, or a descriptor that is
	// not an open network namespace, fails Dial with ErrInvalidConfig;
	// entering another namespace needs CAP_SYS_ADMIN (os.ErrPermission).
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
	// counted in [Stats.Foreign]. The zero value, SendersDefault, accepts
	// only the kernel on the kernel agents' groups 1 to 10.
	Senders SenderPolicy

	// KernelWait makes blocking receives ([Reader.Next], [Conn.Receive])
	// wait for the next datagram inside the recvmmsg system call, as a C
	// program does, instead of in the Go runtime poller, and takes the
	// socket off the poller altogether. A wake-up then costs one system
	// call instead of a recvmmsg that finds nothing, an epoll_pwait and the
	// scheduler's round trip; for the least CPU per message of a reader
	// that keeps up with a busy source, add RawWait (benchmarks/README.md:
	// with KernelWait alone a live Reader measured within the noise of
	// the poller's). Sends wait in the kernel too: a unicast to a full
	// receiver sleeps in sendto until it has room instead of retrying. The
	// price: each waiting call holds an OS thread, and Close, Flush and
	// changed deadlines take effect at the end of the current wait slice
	// instead of at once: the slice is 10 ms (SO_RCVTIMEO), which the
	// kernel rounds up to whole clock ticks (12 ms at CONFIG_HZ=250, 13.3
	// ms at CONFIG_HZ=300), and the waiting thread's wake-up adds to it:
	// at CONFIG_HZ=250 a Close or a past deadline took effect after at
	// most 10.6 ms on a quiet machine (BenchmarkKernelWaitUnblock, 3 runs
	// of 100 each) and up to 15 ms on a busy one. Off by default.
	KernelWait bool

	// RawWait, with KernelWait, makes a receive's wait in recvmmsg a raw
	// system call (unix.RawSyscall6), which the Go scheduler does not see:
	// the waiting goroutine keeps its processor (P), and neither the wait
	// nor the wake-up costs the scheduler's bookkeeping (entersyscall,
	// exitsyscall, and the system monitor's hand-offs it causes). A
	// reader of a busy source used a quarter less CPU per message than
	// with KernelWait alone, and less than a plain Go recvmmsg loop
	// (benchmarks/README.md, "The scheduler's bookkeeping of a system
	// call"). The price: while it waits, for up to one of KernelWait's
	// wait slices at a time (10 ms, rounded up to clock ticks), that P
	// runs no other goroutine, so a program has one P fewer for its other
	// work. To keep the program running, at most
	// GOMAXPROCS-1 receives of the process wait this way at once (the
	// others wait as with KernelWait alone), so none does at GOMAXPROCS=1;
	// a waiting receive is interrupted by the runtime's preemption signal
	// (garbage collection, a goroutine that has run 10 ms) and yields
	// then (with GODEBUG=asyncpreemptoff=1 no signal comes, and a
	// stop-the-world waits for the rest of the slice). Use it for a process whose receiving goroutine is its main
	// work (a monitor of process events); leave it off in a program that
	// needs all its processors for other goroutines. It needs KernelWait
	// (Dial fails with ErrInvalidConfig otherwise) and has no effect on
	// cntest's fake kernel. Off by default.
	RawWait bool
}

// A Conn is a NETLINK_CONNECTOR socket. Open one with [Dial] (or a cntest
// Kernel's Dial): a nil or zero-value *Conn is not open, and its methods
// fail with an error matching os.ErrInvalid that says so (PortID, Config
// and Stats return zero values; a Reader from its NewReader fails on
// Next).
//
// A Conn is safe for concurrent use: sends may run alongside receives, and
// Close may be called from any goroutine, which unblocks a pending receive
// promptly. A Reader obtained from NewReader is not safe for concurrent use.
type Conn struct {
	t      transport.Transport
	cfg    Config
	closed atomic.Bool
	done   chan struct{}        // closed by Close: wakes the calls waiting on the Conn
	line   atomic.Pointer[line] // Serve's and the calls' shared state (line.go)
	port   uint32

	batches sync.Pool        // *transport.Batch of cfg.BatchSize, for Readers
	singles freeList[Reader] // Readers with a batch of 1, for Receive
	sendBuf freeList[[]byte]
	// kw is the socket of a Config.KernelWait Conn on Linux (nil
	// otherwise): small sends go to it straight, built on the stack.
	kw *fdConn

	wdeadline atomic.Int64 // unix nanoseconds, 0 = none
	flush     flushState
	recvSeen  atomic.Uint64 // the Flush count Receive has seen

	counters counters
}

func init() {
	transport.NewConn = func(open func(uint32) (transport.Transport, error), cfg any) (any, error) {
		c, _ := cfg.(*Config)
		return dialWith(c, open)
	}
}

// Dial opens a connector socket. A nil config means the defaults. Every
// field of the Config is checked first: a value out of range fails with an
// error matching ErrInvalidConfig that names it (a group out of range in
// Config.Groups matches ErrInvalidGroup too).
func Dial(cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	return dialWith(cfg, func(mask uint32) (transport.Transport, error) { return dial(cfg, mask) })
}

// dialWith checks cfg, opens the transport with the groups' bind mask and
// sets the Conn up on it: Dial's steps, shared with cntest.
func dialWith(cfg *Config, open func(mask uint32) (transport.Transport, error)) (*Conn, error) {
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
	t, err := open(mask)
	if err != nil {
		return nil, opErr("dial", mapDialErr(err, cfg))
	}
	return newConn(t, cfg)
}

// validate checks every field of cfg: a value out of range is an error
// that names the field, never a silent default.
func (cfg *Config) validate() error {
	for i, g := range cfg.Groups {
		if !g.Valid() {
			return fmt.Errorf("%w: Config.Groups[%d] is %d, out of range (%w): connector groups are numbered 1 to %d", ErrInvalidConfig, i, uint32(g), ErrInvalidGroup, MaxGroup)
		}
	}
	if err := cfg.Senders.check(); err != nil {
		return err
	}
	if err := checkBufferSize("Config.ReadBufferSize", cfg.ReadBufferSize); err != nil {
		return err
	}
	if cfg.RawWait && !cfg.KernelWait {
		return fmt.Errorf("%w: Config.RawWait is set without Config.KernelWait; a raw wait is a wait in recvmmsg, which KernelWait enables", ErrInvalidConfig)
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

// newConn sets up a Conn on an open transport; cfg has been checked.
func newConn(t transport.Transport, cfg *Config) (*Conn, error) {
	c := &Conn{t: t, port: t.PortID(), cfg: *cfg, done: make(chan struct{})}
	c.cfg.Groups = append([]Group(nil), cfg.Groups...)
	if c.cfg.MessageBufferSize == 0 {
		c.cfg.MessageBufferSize = DefaultMessageBufferSize
	}
	if c.cfg.BatchSize == 0 {
		c.cfg.BatchSize = DefaultBatchSize
	}
	size, n := c.cfg.MessageBufferSize, c.cfg.BatchSize
	c.batches.New = func() any { return transport.NewBatch(n, size) }
	c.singles.new = c.newSingle
	c.sendBuf.new = func() *[]byte { b := make([]byte, 0, 512); return &b }
	c.kw = kernelWaitSocket(t)

	var err error
	if c.cfg.ReadBufferSize > 0 {
		if err = t.SetReadBuffer(c.cfg.ReadBufferSize); err != nil {
			err = fmt.Errorf("setting the read buffer (Config.ReadBufferSize): %w", c.mapErr(err, "set read buffer"))
		}
	}
	if err == nil && c.cfg.NoENOBUFS {
		if err = t.SetNoENOBUFS(true); err != nil {
			err = fmt.Errorf("setting NETLINK_NO_ENOBUFS (Config.NoENOBUFS): %w", c.mapErr(err, "set NETLINK_NO_ENOBUFS"))
		}
	}
	if err != nil {
		_ = t.Close()
		return nil, opErr("dial", err)
	}
	return c, nil
}

// Close closes the socket. A receive blocked in another goroutine returns
// promptly with an error matching ErrClosed, as does every later call.
// Messages still queued in the socket are discarded with it; those a
// [Reader] had received and not yet returned are counted in [Stats.Unread]
// (see [Reader.Next]). To read both first, call [Conn.Flush] and read until
// ErrFlushed.
func (c *Conn) Close() error {
	if !c.usable() {
		return &OpError{Op: "close", Err: errNoConn}
	}
	if c.closed.Swap(true) {
		return &OpError{Op: "close", Err: errClosed}
	}
	close(c.done)
	if err := c.t.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return &OpError{Op: "close", Err: err}
	}
	return nil
}

// PortID returns the socket's netlink port id, the address userspace peers
// send unicast messages to.
func (c *Conn) PortID() uint32 {
	if c == nil {
		return 0
	}
	return c.port
}

// Config returns the configuration the Conn runs with, defaults filled in.
func (c *Conn) Config() Config {
	if c == nil {
		return Config{}
	}
	cfg := c.cfg
	cfg.Groups = append([]Group(nil), c.cfg.Groups...)
	return cfg
}

// usable reports whether c was opened (by Dial or a cntest Kernel): not a
// nil or zero-value *Conn.
func (c *Conn) usable() bool { return c != nil && c.t != nil }

func (c *Conn) checkOpen(op string) error {
	if !c.usable() {
		return &OpError{Op: op, Err: errNoConn}
	}
	if c.closed.Load() {
		return &OpError{Op: op, Err: errClosed}
	}
	return nil
}
