package w1

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnlink/connector"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds a request whose context has no deadline.
	DefaultTimeout = 5 * time.Second
	// DefaultReadBufferSize is the socket receive buffer Dial asks for:
	// room for many bundled 16 KiB reply bursts, so that the kernel never
	// waits for the reader (see the package documentation on stalls).
	DefaultReadBufferSize = 1 << 20
)

// Config configures a Conn. A nil *Config means the defaults.
type Config struct {
	// Timeout bounds each request whose context has no deadline; 0 means
	// DefaultTimeout.
	Timeout time.Duration

	// ReadBufferSize is the receive buffer Dial sets (SO_RCVBUF, forced
	// past net.core.rmem_max with CAP_NET_ADMIN); 0 means
	// DefaultReadBufferSize. NewConn leaves the given Conn's buffer alone.
	ReadBufferSize int

	// NoBundle turns W1_CN_BUNDLE off: the kernel then sends every reply
	// record in a datagram of its own (and a stray empty record ahead of a
	// lone RESET, READ or TOUCH). Bundling is on by default.
	NoBundle bool

	// OnError, if not nil, is called on the reader goroutine with every
	// receive condition it survives (overruns, malformed datagrams). It
	// must not block.
	OnError func(error)
}

// A Conn is a client of the kernel's w1 agent: it lists and searches bus
// masters, manages their slaves and runs transactions on the bus.
//
// A Conn owns the receive side of its connector.Conn: a connector.Mux
// serves it on a goroutine of its own, so every reply is read as soon as it
// arrives and no caller, however slow, makes the kernel wait (a w1 reply
// that cannot be queued blocks the bus master's kernel thread, and with it
// every user of that bus). Requests go through connector.Exchange, which
// claims their replies from that reader; see the package documentation for
// the matching rules. Add routes for other traffic on the same socket
// (notifications, if it joined group 3) with Conn.Mux.
//
// A Conn is safe for concurrent use by multiple goroutines; requests from
// several goroutines run concurrently (the kernel serialises them per bus
// master).
type Conn struct {
	c      *connector.Conn
	own    bool
	cfg    Config
	mx     *connector.Mux
	life   context.Context // cancelled by Close
	cancel context.CancelFunc
	served chan struct{}
	closed atomic.Bool

	seq   atomic.Uint32
	rngMu sync.Mutex
	rng   *rand.Rand

	strays atomic.Uint64
}

// Dial opens a connector socket for w1 requests and returns a Conn that owns
// it. It needs no privilege: the kernel's w1 agent checks none (see the
// package documentation).
func Dial(cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	size := cfg.ReadBufferSize
	if size == 0 {
		size = DefaultReadBufferSize
	}
	c, err := connector.Dial(&connector.Config{ReadBufferSize: size})
	if err != nil {
		return nil, err
	}
	w, err := NewConn(c, cfg)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	w.own = true
	return w, nil
}

// check reports a Config field out of range with an error matching
// connector.ErrInvalidConfig that names it: a negative value never means
// the default.
func (cfg *Config) check() error {
	switch {
	case cfg.Timeout < 0:
		return fmt.Errorf("w1: %w: Config.Timeout is %v; give a positive duration, or 0 for DefaultTimeout (%v)", connector.ErrInvalidConfig, cfg.Timeout, DefaultTimeout)
	case cfg.ReadBufferSize < 0 || int64(cfg.ReadBufferSize) > connector.MaxBufferSize:
		return fmt.Errorf("w1: %w: Config.ReadBufferSize is %d; it must be 0 to %d bytes, 0 for DefaultReadBufferSize (%d)", connector.ErrInvalidConfig, cfg.ReadBufferSize, int64(connector.MaxBufferSize), DefaultReadBufferSize)
	}
	return nil
}

// NewConn returns a Conn that sends its requests on c, and serves c with a
// connector.Mux (Conn.Mux) on a goroutine of its own until Close: nothing
// else may read c. c may be the Conn of a cntest fake kernel. A Config
// field out of range fails with an error matching
// connector.ErrInvalidConfig that names it, and c is left alone.
func NewConn(c *connector.Conn, cfg *Config) (*Conn, error) {
	if c == nil {
		return nil, errors.New("w1: new conn: the *connector.Conn is nil")
	}
	if cfg != nil {
		if err := cfg.check(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Conn{
		c:      c,
		mx:     connector.NewMux(),
		life:   ctx,
		cancel: cancel,
		served: make(chan struct{}),
		rng:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	if cfg != nil {
		w.cfg = *cfg
	}
	if w.cfg.Timeout == 0 {
		w.cfg.Timeout = DefaultTimeout
	}
	w.seq.Store(w.rng.Uint32())
	// The stray empty record has id 0:0: count it rather than leave it
	// unrouted.
	w.mx.HandleFunc(connector.CBID{}, func(r connector.Request) {
		if IsStray(r.Msg, r.From) {
			w.strays.Add(1)
		}
	})
	var opts *connector.ServeOptions
	if w.cfg.OnError != nil {
		opts = &connector.ServeOptions{OnError: w.cfg.OnError}
	}
	go w.serve(ctx, opts)
	w.waitServing(opts)
	return w, nil
}

// serve runs the Mux on the socket until ctx ends or the Conn closes. A
// Serve fails at once while another runs on the same Conn, which the probe
// of waitServing may briefly be: it then tries again.
func (w *Conn) serve(ctx context.Context, opts *connector.ServeOptions) {
	defer close(w.served)
	backoff := time.Duration(0)
	for {
		err := w.mx.Serve(ctx, w.c, opts)
		if ctx.Err() != nil || errors.Is(err, connector.ErrClosed) {
			return
		}
		runtime.Gosched()
		if backoff > 0 {
			time.Sleep(backoff)
		}
		backoff = min(2*backoff+time.Microsecond, 50*time.Millisecond)
	}
}

// waitServing returns once serve's Mux reads the socket. Until then a
// request would read the socket itself and drop what is not its reply (a
// notification for one of the Mux's routes, say). The probe is a Serve with
// a cancelled context on the same Mux: it fails at once while the real one
// runs; otherwise it takes the socket for a moment, dispatches what it read
// to the same routes and returns, so probing loses nothing.
func (w *Conn) waitServing(opts *connector.ServeOptions) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		err := w.mx.Serve(done, w.c, opts)
		if !errors.Is(err, context.Canceled) {
			return // the real Serve runs, or the Conn is closed
		}
		select {
		case <-w.served:
			return
		default:
		}
		runtime.Gosched()
	}
}

// Mux returns the Mux that serves the Conn's socket. Replies to the Conn's
// requests never reach its routes; add routes for anything else the socket
// receives, such as notifications (see EventHandler).
func (w *Conn) Mux() *connector.Mux { return w.mx }

// Conn returns the connector.Conn the requests go through.
func (w *Conn) Conn() *connector.Conn { return w.c }

// Close stops serving the socket; requests still waiting return at once
// with an error matching connector.ErrClosed. It closes the connector.Conn
// if Dial opened it, and leaves it open otherwise.
func (w *Conn) Close() error {
	if w.closed.Swap(true) {
		return &connector.OpError{Op: "close", Err: connector.ErrClosed}
	}
	w.cancel()
	<-w.served
	if w.own {
		return w.c.Close()
	}
	return nil
}

// Stats are a Conn's counters.
type Stats struct {
	// Strays counts the empty 0:0 records the kernel sends ahead of some
	// unbundled replies, skipped as they carry nothing.
	Strays uint64
	// Mux holds the counters of the Mux serving the socket: Claimed is the
	// number of reply records, Unrouted what matched neither a request nor
	// a route (late replies after a timeout, say).
	Mux connector.MuxStats
}

// Stats returns the counters.
func (w *Conn) Stats() Stats {
	return Stats{Strays: w.strays.Load(), Mux: w.mx.Stats()}
}

// nextSeqAck returns a fresh seq and a random ack that is neither 0 (the ack
// of notifications) nor seq+1: the kernel marks data records with ack =
// seq+1 and status records with the request's ack, so the two must differ.
func (w *Conn) nextSeqAck() (uint32, uint32) {
	seq := w.seq.Add(1)
	w.rngMu.Lock()
	ack := w.rng.Uint32()
	for ack == seq+1 || ack == 0 {
		ack = w.rng.Uint32()
	}
	w.rngMu.Unlock()
	return seq, ack
}

// match is w1's reply rule for connector.Exchange: a unicast from the kernel
// (Exchange checks the port) with the request's id and seq, and either the
// request's ack (a status record) or seq+1 (a data record).
func match(req, reply connector.Message, from connector.Sender) bool {
	return from.Group == 0 && reply.ID == req.ID && reply.Seq == req.Seq &&
		(reply.Ack == req.Ack || reply.Ack == req.Seq+1)
}

// exchange sends payload as one cn_msg to the w1 agent and feeds every reply
// record to handle until it returns true. It returns once the request is
// complete, ctx ends (the default timeout applies when ctx has no deadline)
// or the Conn closes. Without the w1 agent it fails at once with an error
// matching connector.ErrNoAgent.
func (w *Conn) exchange(ctx context.Context, op string, payload []byte, handle func(req, m connector.Message) bool) error {
	if w.closed.Load() {
		return &connector.OpError{Op: "w1 " + op, Err: connector.ErrClosed}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.Timeout)
		defer cancel()
	}
	// Close ends the request too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.life, cancel)()
	seq, ack := w.nextSeqAck()
	req := connector.Message{ID: ID, Seq: seq, Ack: ack, Data: payload}
	if !w.cfg.NoBundle {
		req.Flags = FlagBundle
	}
	got := false
	err := connector.Exchange(ctx, w.c, req, connector.Destination{}, match, func(m connector.Message, _ connector.Sender) bool {
		got = true
		return !handle(req, m)
	})
	if err != nil && w.closed.Load() && errors.Is(err, context.Canceled) {
		return &connector.OpError{Op: "w1 " + op, Err: connector.ErrClosed}
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		what := "no reply at all"
		if got {
			what = "an incomplete reply"
		}
		return fmt.Errorf("%w: w1 %s got %s: %w", ErrNoReply, op, what, err)
	}
	return err
}

// A reply collects the records of one MASTER_CMD or SLAVE_CMD request with
// ncmds commands: the data records (ack = seq+1) of each command and one
// status record per command (ack = the request's ack). The kernel ends a
// message early, with one status, when a slave does not answer its reset
// (ENODEV) or a command runs past the message (E2BIG); a message-level
// error (a status without a command header) ends it too.
type reply struct {
	op    string
	ncmds int
	next  int                      // index of the command whose status is due
	data  func(i int, c Cmd) error // a data record for command i
	errs  []error
}

func (r *reply) handle(req, m connector.Message) bool {
	msgs, err := ParseMsgs(m.Data)
	if err != nil {
		r.errs = append(r.errs, err)
		return true
	}
	for _, msg := range msgs {
		if m.Ack == req.Seq+1 && m.Ack != req.Ack {
			// Data record: the command header and its data.
			if len(msg.Cmds) == 1 && r.next < r.ncmds && r.data != nil {
				if err := r.data(r.next, msg.Cmds[0]); err != nil {
					r.errs = append(r.errs, err)
				}
			}
			continue
		}
		if len(msg.Cmds) == 0 {
			if msg.Status != 0 {
				r.errs = append(r.errs, &Error{Op: r.op, Index: -1, Errno: syscall.Errno(msg.Status)})
			}
			return true
		}
		i := r.next
		r.next++
		if msg.Status != 0 {
			r.errs = append(r.errs, &Error{Op: r.op, Index: i, Cmd: msg.Cmds[0].Cmd, Errno: syscall.Errno(msg.Status)})
			if e := syscall.Errno(msg.Status); e == syscall.ENODEV || e == syscall.E2BIG {
				return true
			}
		}
		if r.next >= r.ncmds {
			return true
		}
	}
	return false
}

func (r *reply) err() error {
	switch len(r.errs) {
	case 0:
		return nil
	case 1:
		return r.errs[0]
	}
	return errors.Join(r.errs...)
}

// do runs one MASTER_CMD or SLAVE_CMD message and waits for all its records.
func (w *Conn) do(ctx context.Context, op string, msg Msg, data func(i int, c Cmd) error) error {
	payload, err := AppendMsg(nil, msg)
	if err != nil {
		return err
	}
	if len(payload) > connector.MaxKernelPayload {
		return fmt.Errorf("w1 %s: %w: the request takes %d bytes, the kernel accepts at most %d", op, connector.ErrMessageTooLarge, len(payload), connector.MaxKernelPayload)
	}
	r := &reply{op: op, ncmds: len(msg.Cmds), data: data}
	if err := w.exchange(ctx, op, payload, r.handle); err != nil {
		return err
	}
	return r.err()
}
