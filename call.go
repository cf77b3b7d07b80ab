package connector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A Destination says where Call and [Exchange] send a request. The zero value
// is the kernel (port 0), where the agent registered for the message's id
// receives it.
type Destination struct {
	// Port is a userspace socket's port id (Conn.PortID). 0 means the
	// kernel, or a group if Group is set.
	Port uint32
	// Group, if not 0, multicasts the request on that group; Port must
	// then be 0.
	Group Group
}

// ToPort returns the Destination of the userspace socket with the given
// port id (0 is the kernel).
func ToPort(port uint32) Destination { return Destination{Port: port} }

// ToGroup returns the Destination of every socket that joined group g.
func ToGroup(g Group) Destination { return Destination{Group: g} }

// Kernel reports whether d is the kernel.
func (d Destination) Kernel() bool { return d.Port == 0 && d.Group == 0 }

func (d Destination) String() string {
	switch {
	case d.Group != 0:
		return fmt.Sprintf("group %d", d.Group)
	case d.Port != 0:
		return fmt.Sprintf("port %d", d.Port)
	}
	return "the kernel"
}

// accepts reports whether a reply from from can answer a request sent to d:
// a request to the kernel is answered by the kernel (port 0), one to a port
// by that port; a multicast request may be answered by anyone.
func (d Destination) accepts(from Sender) bool {
	switch {
	case d.Group != 0:
		return true
	case d.Port != 0:
		return from.Port == d.Port
	}
	return from.Port == 0
}

// A Match reports whether reply, received from from, answers req. Each
// agent has its own convention, so Call and [Exchange] take the matcher as a
// parameter; the package provides the common ones ([MatchGenealogy],
// [MatchSeqAck], [MatchAckPlusOne], [MatchSeq]), and a protocol package writes its own for
// anything else, such as a sequence number inside the payload.
//
// Call and [Exchange] check the sender before they ask the Match: a reply to
// a request sent to the kernel must come from the kernel (port 0), and one to
// a port from that port. A Match runs on the goroutine that reads the Conn,
// possibly with a lock held: it must be fast, must not block and must not
// call into this package. reply.Data is valid only during the call.
type Match func(req, reply Message, from Sender) bool

var (
	// [MatchGenealogy] is the convention that
	// Documentation/driver-api/connector.rst describes: the requester
	// picks a locally unique seq and a random ack, and the reply repeats
	// the request's id and seq and carries ack + 1.
	MatchGenealogy Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Seq == req.Seq && reply.Ack == req.Ack+1
	}

	// [MatchSeqAck] matches a reply with the request's id and seq and
	// ack = seq + 1: w1 answers LIST_MASTERS and sends the data records of
	// its commands this way (drivers/w1/w1_netlink.c).
	MatchSeqAck Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Seq == req.Seq && reply.Ack == req.Seq+1
	}

	// [MatchAckPlusOne] matches a reply with the request's id and
	// ack = request ack + 1, whatever its seq: the form of the process
	// events connector's acknowledgement (drivers/connector/cn_proc.c,
	// cn_proc_ack), multicast on group 1 with a per-CPU event counter as
	// seq. Which requests a socket sees acknowledged depends on the kernel:
	//
	//   - every version sends none when the listener count is below 1
	//     after the request (the IGNORE that ends the last subscription),
	//     for a sender outside the initial user or PID namespace, or for a
	//     malformed request;
	//   - before Linux 6.6 every other LISTEN and IGNORE is acknowledged,
	//     to every group-1 member;
	//   - from Linux 6.6 each socket's filter (cn_filter) decides who gets
	//     an acknowledgement (an event with what = PROC_EVENT_NONE): a
	//     socket whose last request was an IGNORE gets none, not even its
	//     own IGNORE's, and one subscribed with fewer than every event kind
	//     gets none either, its own LISTEN's included (the kernel stores
	//     the request's filter before it acknowledges). Only a LISTEN for
	//     every kind (PROC_EVENT_ALL, which the 4-byte classic request and
	//     a filter of 0 also mean) is seen acknowledged by its sender.
	//
	// Pick a random, non-zero ack per request so that concurrent
	// requesters cannot take each other's replies.
	MatchAckPlusOne Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Ack == req.Ack+1
	}

	// [MatchSeq] matches every reply with the request's id and seq, whatever
	// its ack. w1 answers a command with data records (ack = seq + 1) and
	// then one status record per command carrying the request's own ack;
	// use it with [Exchange], counting status records to know when the
	// exchange is complete.
	MatchSeq Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Seq == req.Seq
	}
)

// A CallOption configures a Call or an Exchange.
type CallOption func(*call)

// WithUnmatched makes the call hand h every message that it reads from the
// Conn itself (when no Serve runs on the Conn) and that no waiting call
// claims, instead of dropping it: for example the events that arrive
// between a subscription request and its acknowledgement. h runs on the
// goroutine of the call that reads, in arrival order; the Request's message
// is h's to keep. When several waiting calls have one, the reading call's
// own is used, else another's. A panic in h is recovered and ignored. Under
// Serve, such messages are routed by the Mux as usual and h is not called.
func WithUnmatched(h Handler) CallOption {
	return func(p *call) { p.unmatched = h }
}

// ErrCallInHandler reports a Call or [Exchange] made on a Conn from the
// goroutine that serves it (a Mux handler or [ServeOptions.OnError]): the reply
// could only be read by that same goroutine, which is busy waiting, so the
// call fails at once instead of deadlocking. Make the call from another
// goroutine, for example by wrapping the handler in a [Queue].
var ErrCallInHandler = errors.New("a Call on a Conn from inside a handler serving that Conn would deadlock: its reply can only be read by the busy Serve loop; call from another goroutine (wrap the handler in a Queue)")

// Call sends req to to and waits for the first reply that match accepts,
// which it returns with its sender. The reply is a copy the caller owns.
// See [Exchange] for how replies are read and what can fail.
func Call(ctx context.Context, c *Conn, req Message, to Destination, match Match, opts ...CallOption) (Message, Sender, error) {
	var reply Message
	var from Sender
	got := false
	err := Exchange(ctx, c, req, to, match, func(m Message, f Sender) bool {
		reply, from, got = m, f, true
		return false
	}, opts...)
	if err != nil {
		return Message{}, Sender{}, err
	}
	if !got {
		return Message{}, Sender{}, &OpError{Op: "call", Err: errors.New("exchange ended without a reply")}
	}
	return reply, from, nil
}

// Exchange sends req to to and calls fn with every reply that match accepts,
// in arrival order, until fn returns false ([Exchange] then returns nil), ctx
// ends or c is closed. fn runs on the caller's goroutine and owns the
// messages it is given. Use it for agents that answer one request with
// several messages, such as w1.
//
// The request is registered before it is sent, so no reply can slip past.
// Replies are found wherever c is read:
//
//   - while a Mux serves c, its Serve loop offers every message to the
//     waiting calls before routing it, and a claimed message never reaches
//     a handler;
//   - otherwise one of the waiting calls reads c itself, one datagram at a
//     time, and hands the replies to their callers; messages that match no
//     waiting call are dropped, or given to the handler of [WithUnmatched].
//     Do not read c in other ways (Receive, a [Reader]) while such a call
//     waits: the two readers would take each other's messages.
//
// Any number of calls may wait on one Conn at once, from any goroutines. A
// call made from the goroutine that serves c (a handler, or OnError) fails at
// once with [ErrCallInHandler]: it would wait for itself.
//
// A request to the kernel for an id that no kernel agent has registered
// fails at once with an error matching [ErrNoAgent], where the Conn can tell
// (see [Conn.Agents]); the kernel would drop it silently. Otherwise nothing
// tells a sender that a request went unheard: always give ctx a deadline.
// Errors: ctx.Err() when ctx ends, [ErrClosed], [ErrNoAgent], [ErrCallInHandler],
// and the send's errors (os.ErrPermission for a port or group without
// CAP_NET_ADMIN), each in an *OpError. Overruns while waiting are counted in
// [Conn.Stats] and, under Serve, reported through [ServeOptions.OnError]; a
// reply lost to one shows up as the ctx's deadline.
//
// [Exchange] manages c's read deadline while it reads: do not set one yourself
// while calls are waiting.
func Exchange(ctx context.Context, c *Conn, req Message, to Destination, match Match, fn func(reply Message, from Sender) bool, opts ...CallOption) error {
	switch {
	case c == nil:
		return &OpError{Op: "call", Err: errors.New("nil Conn")}
	case match == nil:
		return &OpError{Op: "call", Err: errors.New("nil Match")}
	case fn == nil:
		return &OpError{Op: "call", Err: errors.New("nil reply function")}
	case to.Port != 0 && to.Group != 0:
		return &OpError{Op: "call", Err: fmt.Errorf("destination has both port %d and group %d: set one", to.Port, to.Group)}
	case to.Group != 0 && !to.Group.Valid():
		return &OpError{Op: "call", Err: fmt.Errorf("%w: %d", ErrInvalidGroup, to.Group)}
	}
	if err := ctx.Err(); err != nil {
		return &OpError{Op: "call", Err: err}
	}
	if to.Kernel() {
		if err := c.checkAgent(req.ID); err != nil {
			return err
		}
	}
	l := acquireLine(c)
	defer l.release()
	p := &call{req: req, to: to, match: match, notify: make(chan struct{}, 1)}
	for _, o := range opts {
		if o != nil {
			o(p)
		}
	}
	if err := l.add(p); err != nil {
		return err
	}
	defer l.remove(p)
	if err := sendTo(c, req, to); err != nil {
		return err
	}
	for {
		for _, r := range l.take(p) {
			if !fn(r.m, r.from) {
				return nil
			}
		}
		if c.isClosed() {
			return &OpError{Op: "call", Err: errClosed}
		}
		if err := ctx.Err(); err != nil {
			return &OpError{Op: "call", Err: fmt.Errorf("no reply from %v to %v (seq %d, ack %d): %w", to, req.ID, req.Seq, req.Ack, err)}
		}
		lead, wait := l.lead(p)
		if !lead {
			if wait == nil {
				continue // replies arrived meanwhile
			}
			select {
			case <-p.notify:
			case <-wait:
			case <-ctx.Done():
			case <-c.done:
			}
			continue
		}
		err := l.readFor(ctx, p)
		l.unlead()
		if err != nil {
			// One "connector:" prefix: a receive's *OpError gives its
			// operation and cause.
			var oe *OpError
			if errors.As(err, &oe) {
				err = fmt.Errorf("%s: %w", oe.Op, oe.Err)
			}
			return &OpError{Op: "call", Err: err}
		}
	}
}

func sendTo(c *Conn, m Message, to Destination) error {
	switch {
	case to.Group != 0:
		return c.Multicast(to.Group, m)
	case to.Port != 0:
		return c.SendTo(to.Port, m)
	}
	return c.Send(m)
}

// A call is one waiting Call or [Exchange].
type call struct {
	req       Message
	to        Destination
	match     Match
	unmatched Handler       // see WithUnmatched
	queue     []reply       // claimed replies, under line.mu
	notify    chan struct{} // capacity 1: a reply was queued
}

type reply struct {
	m    Message
	from Sender
}

// A line is the state that Serve and the calls waiting on one Conn share:
// the waiting calls, and who reads the Conn. Exactly one goroutine reads at
// a time, the Serve loop or one of the calls (the leader); the others wait.
// Waking a reader goes through the Conn's read deadline, set in the past,
// always under mu after the state that explains the wake-up was changed, so
// that a reader which checks that state under mu cannot miss it.
type line struct {
	c    *Conn
	refs int // under lines.mu

	ncalls atomic.Int32 // len(calls), read without the lock by Serve

	mu        sync.Mutex
	calls     []*call
	reader    int           // readerNone, readerServe or readerCall
	serveG    uint64        // the Serve goroutine's id
	serveWant bool          // a Serve waits for the leading call to stop reading
	released  chan struct{} // closed and replaced when the reader stops
	dropped   atomic.Uint64 // messages a leading call read that nothing wanted
}

const (
	readerNone = iota
	readerServe
	readerCall
)

var lines struct {
	mu sync.Mutex
	m  map[*Conn]*line
}

// acquireLine returns c's line, creating it if needed; release it when done.
func acquireLine(c *Conn) *line {
	lines.mu.Lock()
	defer lines.mu.Unlock()
	if lines.m == nil {
		lines.m = make(map[*Conn]*line)
	}
	l := lines.m[c]
	if l == nil {
		l = &line{c: c, released: make(chan struct{})}
		lines.m[c] = l
	}
	l.refs++
	return l
}

func (l *line) release() {
	lines.mu.Lock()
	defer lines.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(lines.m, l.c)
	}
}

// wakeLocked makes the current reader's receive return.
func (l *line) wakeLocked() { _ = l.c.SetReadDeadline(past) }

// interruptOn wakes the reader when ctx ends. The returned function stops
// that and returns only once a wake-up that already started has finished.
func (l *line) interruptOn(ctx context.Context) func() {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		l.mu.Lock()
		l.wakeLocked()
		l.mu.Unlock()
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

// rearm is called by a reader whose receive hit the deadline. If the reader
// should stop (the Conn is closed, its ctx ended, or, for a leading call, a
// Serve waits), it returns why: errClosed, ctx.Err() or errYield; otherwise
// the wake-up was meant for an earlier reader, and it clears the deadline so
// that the receive can block again.
func (l *line) rearm(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c.isClosed() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.reader == readerCall && l.serveWant {
		return errYield
	}
	if err := l.c.SetReadDeadline(time.Time{}); err != nil {
		if l.c.isClosed() {
			return errClosed // closed meanwhile
		}
		return err
	}
	return nil
}

var errYield = errors.New("a Serve takes over reading")

// startServe makes the caller the Conn's reader, waiting for a leading call
// to stop reading.
func (l *line) startServe(ctx context.Context) error {
	g := goid()
	for {
		l.mu.Lock()
		switch l.reader {
		case readerServe:
			l.mu.Unlock()
			return &OpError{Op: "serve", Err: errors.New("another Serve already runs on this Conn")}
		case readerNone:
			l.reader, l.serveG, l.serveWant = readerServe, g, false
			err := l.c.SetReadDeadline(time.Time{})
			l.mu.Unlock()
			if err != nil {
				l.stopServe()
				return opErr("serve", err)
			}
			return nil
		}
		l.serveWant = true
		l.wakeLocked()
		wait := l.released
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			l.mu.Lock()
			l.serveWant = false
			l.mu.Unlock()
			return &OpError{Op: "serve", Err: ctx.Err()}
		}
	}
}

func (l *line) stopServe() {
	l.mu.Lock()
	l.reader, l.serveG = readerNone, 0
	_ = l.c.SetReadDeadline(time.Time{})
	l.releaseLocked()
	l.mu.Unlock()
}

func (l *line) releaseLocked() {
	close(l.released)
	l.released = make(chan struct{})
}

// add registers p, unless the caller is the goroutine serving the Conn.
func (l *line) add(p *call) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reader == readerServe && l.serveG != 0 && l.serveG == goid() {
		return &OpError{Op: "call", Err: ErrCallInHandler}
	}
	l.calls = append(l.calls, p)
	l.ncalls.Store(int32(len(l.calls)))
	return nil
}

func (l *line) remove(p *call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, q := range l.calls {
		if q == p {
			l.calls = append(l.calls[:i], l.calls[i+1:]...)
			break
		}
	}
	l.ncalls.Store(int32(len(l.calls)))
}

// take returns the replies queued for p.
func (l *line) take(p *call) []reply {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := p.queue
	p.queue = nil
	return q
}

// lead makes p the reader if nobody reads and it has no replies waiting.
// Otherwise it returns the channel that closes when the reader stops (nil
// if replies are waiting).
func (l *line) lead(p *call) (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(p.queue) > 0 {
		return false, nil
	}
	if l.reader == readerNone && !l.serveWant {
		l.reader = readerCall
		return true, nil
	}
	return false, l.released
}

func (l *line) unlead() {
	l.mu.Lock()
	l.reader = readerNone
	_ = l.c.SetReadDeadline(time.Time{})
	l.releaseLocked()
	l.mu.Unlock()
}

// readFor reads the Conn for the waiting calls until p has a reply, ctx ends
// (nil: the caller sees it) or a Serve wants to read. It reads one datagram
// at a time, so that stopping never strands messages in a batch.
func (l *line) readFor(ctx context.Context, p *call) error {
	stop := l.interruptOn(ctx)
	defer stop()
	if err := l.rearm(ctx); err != nil {
		return stopReading(err)
	}
	for {
		msgs, from, err := l.c.Receive()
		if len(msgs) > 0 {
			var others []Message
			var h Handler
			l.mu.Lock()
			for _, m := range msgs {
				if !l.claimLocked(m, from, false) {
					others = append(others, m)
				}
			}
			if len(others) > 0 {
				h = l.unmatchedLocked(p)
			}
			done := len(p.queue) > 0
			l.mu.Unlock()
			for _, m := range others {
				if h == nil {
					l.dropped.Add(1)
					continue
				}
				_ = dispatch(h, Request{Msg: m, From: from, conn: l.c})
			}
			if done {
				return nil
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrClosed):
				return ErrClosed
			case errors.Is(err, os.ErrDeadlineExceeded):
				if err := l.rearm(ctx); err != nil {
					return stopReading(err)
				}
			case errors.Is(err, ErrOverrun), errors.Is(err, ErrTruncated), errors.Is(err, ErrMalformed), errors.Is(err, ErrFlushed):
				// Counted in [Conn.Stats]; a lost reply shows as a timeout.
				// A Flush means nothing to a waiting call.
			default:
				return err
			}
		}
	}
}

// stopReading turns why a leading call stops reading (rearm's error) into
// readFor's result: nil when the caller goes on (its ctx ended, which it
// reports itself, or a Serve takes over), the error when the call must end
// (the Conn was closed).
func stopReading(err error) error {
	if errors.Is(err, errYield) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// unmatchedLocked returns the handler for what a leading call reads that
// no call claims: the leader's own, else any waiting call's.
func (l *line) unmatchedLocked(leader *call) Handler {
	if leader.unmatched != nil {
		return leader.unmatched
	}
	for _, q := range l.calls {
		if q.unmatched != nil {
			return q.unmatched
		}
	}
	return nil
}

// claim offers m to the waiting calls; it reports whether one took it.
// With copyData the message is copied first, as Serve's [Reader] reuses its
// buffer.
func (l *line) claim(m Message, from Sender, copyData bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.claimLocked(m, from, copyData)
}

func (l *line) claimLocked(m Message, from Sender, copyData bool) bool {
	for _, p := range l.calls {
		if !p.to.accepts(from) || !safeMatch(p.match, p.req, m, from) {
			continue
		}
		if copyData {
			m.Data = append([]byte(nil), m.Data...)
		}
		p.queue = append(p.queue, reply{m: m, from: from})
		select {
		case p.notify <- struct{}{}:
		default:
		}
		return true
	}
	return false
}

// safeMatch calls a Match; one that panics matches nothing.
func safeMatch(match Match, req, m Message, from Sender) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return match(req, m, from)
}

// goid returns the calling goroutine's id, parsed from the first line of
// its stack trace ("goroutine 18 [running]:"). It serves only to detect a
// Call made from the goroutine that serves the same Conn.
func goid() uint64 {
	var buf [32]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	var id uint64
	for _, ch := range b[len(prefix):] {
		if ch < '0' || ch > '9' {
			break
		}
		id = id*10 + uint64(ch-'0')
	}
	return id
}
