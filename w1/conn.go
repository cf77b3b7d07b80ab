package w1

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	// receive condition it survives (overruns, malformed datagrams), with
	// handler panics, and with the error of a Serve that stopped and is
	// started again. It must not block. A panic in it is recovered and
	// counted: in Stats.Mux.Panics when the Mux called it, in Stats.Panics
	// when the Conn reported a stopped Serve.
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
	served chan struct{} // closed when serve returns
	closed atomic.Bool

	seq   atomic.Uint32
	rngMu sync.Mutex
	rng   *rand.Rand

	strays, zeroID, ignored, panics atomic.Uint64
}

// Dial opens a connector socket for w1 requests and returns a Conn that owns
// it. It needs no privilege: the kernel's w1 agent checks none (see the
// package documentation).
func Dial(cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		return nil, wrap("dial", "", err)
	}
	size := cfg.ReadBufferSize
	if size == 0 {
		size = DefaultReadBufferSize
	}
	c, err := connector.Dial(&connector.Config{ReadBufferSize: size})
	if err != nil {
		return nil, wrap("dial", "", err)
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
		return fmt.Errorf("%w: Config.Timeout is %v; give a positive duration, or 0 for DefaultTimeout (%v)", connector.ErrInvalidConfig, cfg.Timeout, DefaultTimeout)
	case cfg.ReadBufferSize < 0 || int64(cfg.ReadBufferSize) > connector.MaxBufferSize:
		return fmt.Errorf("%w: Config.ReadBufferSize is %d; it must be 0 to %d bytes, 0 for DefaultReadBufferSize (%d)", connector.ErrInvalidConfig, cfg.ReadBufferSize, int64(connector.MaxBufferSize), DefaultReadBufferSize)
	}
	return nil
}

// NewConn returns a Conn that sends its requests on c, and serves c with a
// connector.Mux (Conn.Mux) on a goroutine of its own until Close: nothing
// else may read c. NewConn returns once that Mux reads c (see
// connector.ServeOptions.OnStart), so no reply or notification can reach c
// before its routes do. c may be the Conn of a cntest fake kernel. A Config
// field out of range fails with an error matching
// connector.ErrInvalidConfig that names it, and c is left alone; so does a
// c that is closed or already served by a Mux.
func NewConn(c *connector.Conn, cfg *Config) (*Conn, error) {
	if c == nil {
		return nil, errors.New("w1: new conn: the *connector.Conn is nil: give it an open Conn (connector.Dial, or a cntest Kernel's Dial)")
	}
	if cfg != nil {
		if err := cfg.check(); err != nil {
			return nil, wrap("new conn", "", err)
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
	// unrouted, and count anything else with that id too, which nothing
	// here takes.
	w.mx.HandleFunc(connector.CBID{}, func(r connector.Request) {
		if IsStray(r.Msg, r.From) {
			w.strays.Add(1)
		} else {
			w.zeroID.Add(1)
		}
	})
	ready := make(chan struct{})
	var once sync.Once
	opts := &connector.ServeOptions{
		OnError: w.cfg.OnError,
		// Serve has become the socket's reader: from here on every
		// reply and notification goes through the Mux.
		OnStart: func(*connector.Conn) { once.Do(func() { close(ready) }) },
	}
	failed := make(chan error, 1)
	go w.serve(ctx, opts, ready, failed)
	select {
	case <-ready:
		return w, nil
	case err := <-failed:
		cancel()
		<-w.served
		return nil, wrap("new conn", "serving the socket", err)
	}
}

// serve runs the Mux on the socket until ctx ends or the socket is closed.
// A Serve that never started (another Serve reads the socket, or it is
// closed) is sent on failed, for NewConn. Once it has served, a Serve that
// returns for any other reason (a receive error it does not survive) is
// reported through Config.OnError and started again, after a pause that
// grows to 50 ms: meanwhile requests read the socket themselves and hand
// what is not theirs to the Mux (see exchange).
func (w *Conn) serve(ctx context.Context, opts *connector.ServeOptions, ready <-chan struct{}, failed chan<- error) {
	defer close(w.served)
	backoff := time.Duration(0)
	for {
		err := w.mx.Serve(ctx, w.c, opts)
		select {
		case <-ready:
		default:
			failed <- err
			return
		}
		if ctx.Err() != nil || errors.Is(err, connector.ErrClosed) {
			return
		}
		w.report(wrap("serve", fmt.Sprintf("serving the socket stopped (serving again in %v)", backoff), err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff+time.Millisecond, 50*time.Millisecond)
	}
}

// report passes err to Config.OnError, if set, and survives its panic as
// Serve does, counting it in Stats.Panics.
func (w *Conn) report(err error) {
	if w.cfg.OnError == nil {
		return
	}
	defer func() {
		if recover() != nil {
			w.panics.Add(1)
		}
	}()
	w.cfg.OnError(err)
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
		return fmt.Errorf("w1: close: %w", connector.ErrClosed)
	}
	w.cancel()
	<-w.served
	if w.own {
		return wrap("close", "", w.c.Close())
	}
	return nil
}

// Stats are a Conn's counters.
type Stats struct {
	// Strays counts the empty 0:0 records the kernel sends ahead of some
	// unbundled replies, skipped as they carry nothing.
	Strays uint64
	// ZeroID counts the other messages with id 0:0 (not from the kernel,
	// or not empty): the Conn's route for 0:0 takes them, and they are
	// dropped.
	ZeroID uint64
	// Ignored counts records in the replies to the Conn's requests that
	// fit none of the request's commands (a data record for a command that
	// returns no data, a record after the status that completed the
	// request): the kernel sends none; they are counted and skipped.
	// Records that arrive after a request ended are counted by the Mux
	// (Unrouted) or the connector.Conn (Stats.Unclaimed).
	Ignored uint64
	// Panics counts the panics of Config.OnError that the Conn recovered
	// when it reported a Serve that stopped (see Config.OnError); those
	// of OnError called by the Mux, and of its handlers, are in
	// Mux.Panics.
	Panics uint64
	// Mux holds the counters of the Mux serving the socket: Claimed is the
	// number of reply records, Unrouted what matched neither a request nor
	// a route (late replies after a timeout, say).
	Mux connector.MuxStats
}

// Stats returns the counters.
func (w *Conn) Stats() Stats {
	return Stats{Strays: w.strays.Load(), ZeroID: w.zeroID.Load(), Ignored: w.ignored.Load(), Panics: w.panics.Load(), Mux: w.mx.Stats()}
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
	if ctx == nil {
		return nilCtx(op)
	}
	if w.closed.Load() {
		return fmt.Errorf("w1: %s: %w", op, connector.ErrClosed)
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
	// The Mux reads the socket, except while serve restarts it: then the
	// request reads it itself and hands the Mux what is not its reply.
	err := connector.Exchange(ctx, w.c, req, connector.Destination{}, match, func(m connector.Message, _ connector.Sender) bool {
		got = true
		return !handle(req, m)
	}, connector.WithUnmatched(w.mx))
	if err != nil && w.closed.Load() && errors.Is(err, context.Canceled) {
		return fmt.Errorf("w1: %s: %w", op, connector.ErrClosed)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		what := "no reply at all"
		if got {
			what = "an incomplete reply"
		}
		return &opError{msg: fmt.Sprintf("w1: %s: %v: got %s (seq %d, ack %d): %v", op, ErrNoReply, what, seq, ack, context.DeadlineExceeded), errs: []error{ErrNoReply, err}}
	}
	return wrap(op, "", err)
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
	w     *Conn // counts the records that fit no command (Stats.Ignored)
}

func (r *reply) handle(req, m connector.Message) bool {
	msgs, err := ParseMsgs(m.Data)
	if err != nil {
		r.errs = append(r.errs, wrap(r.op, "", err))
		return true
	}
	for n, msg := range msgs {
		if m.Ack == req.Seq+1 && m.Ack != req.Ack {
			// Data record: the command header and its data.
			if len(msg.Cmds) == 1 && r.next < r.ncmds && r.data != nil {
				switch err := r.data(r.next, msg.Cmds[0]); {
				case errors.Is(err, errIgnored):
					r.w.ignored.Add(1)
				case err != nil:
					r.errs = append(r.errs, err)
				}
			} else {
				r.w.ignored.Add(1)
			}
			continue
		}
		if r.status(msg) {
			r.w.ignore(len(msgs) - 1 - n)
			return true
		}
	}
	return false
}

// status takes a status record and reports whether the request is complete.
func (r *reply) status(msg Msg) bool {
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
	return r.next >= r.ncmds
}

// errIgnored is what a reply's data function returns for a data record
// that its command does not take: it is counted in Stats.Ignored.
var errIgnored = errors.New("w1: data record for a command that returns none")

// ignore counts n reply records that fit no command in Stats.Ignored.
func (w *Conn) ignore(n int) {
	if n > 0 {
		w.ignored.Add(uint64(n))
	}
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
		return fmt.Errorf("w1: %s: %w: the request takes %d bytes, the kernel accepts at most %d", op, connector.ErrMessageTooLarge, len(payload), connector.MaxKernelPayload)
	}
	r := &reply{op: op, ncmds: len(msg.Cmds), data: data, w: w}
	if err := w.exchange(ctx, op, payload, r.handle); err != nil {
		return err
	}
	return r.err()
}
