package connector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// A line is the state that Serve and the calls waiting on one Conn share:
// the waiting calls, and who reads the Conn. Exactly one goroutine reads at
// a time, the Serve loop or one of the calls (the leader); the others wait.
// Waking a reader goes through the Conn's read deadline, set in the past,
// always under mu after the state that explains the wake-up was changed, so
// that a reader which checks that state under mu cannot miss it.
type line struct {
	c *Conn

	ncalls atomic.Int32 // len(calls), read without the lock by Serve

	mu        sync.Mutex
	calls     []*call
	reader    int           // readerNone, readerServe or readerCall
	readerG   uint64        // the reading goroutine's id (Serve's, or the leading call's)
	serveWant bool          // a Serve waits for the leading call to stop reading
	released  chan struct{} // closed and replaced when the reader stops
}

const (
	readerNone = iota
	readerServe
	readerCall
)

// lineOf returns c's line, made on first use: the state lives as long as
// the Conn, with no table of Conns to look it up in.
func lineOf(c *Conn) *line {
	if l := c.line.Load(); l != nil {
		return l
	}
	l := &line{c: c, released: make(chan struct{})}
	if c.line.CompareAndSwap(nil, l) {
		return l
	}
	return c.line.Load()
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
			l.reader, l.readerG, l.serveWant = readerServe, g, false
			err := l.c.SetReadDeadline(time.Time{})
			l.mu.Unlock()
			if err != nil {
				l.stopServe()
				return serveErr(err)
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

// serveErr gives an error of an operation Serve made on its Conn Serve's
// own Op ("serve"): ErrClosed as it is, anything else with the operation
// that failed.
func serveErr(err error) error {
	var oe *OpError
	switch {
	case errors.Is(err, ErrClosed):
		return &OpError{Op: "serve", Err: errClosed}
	case errors.As(err, &oe) && oe.Op != "serve":
		return &OpError{Op: "serve", Err: fmt.Errorf("%s: %w", oe.Op, oe.Err)}
	}
	return opErr("serve", err)
}

func (l *line) stopServe() {
	l.mu.Lock()
	l.reader, l.readerG = readerNone, 0
	_ = l.c.SetReadDeadline(time.Time{})
	l.releaseLocked()
	l.mu.Unlock()
}

func (l *line) releaseLocked() {
	close(l.released)
	l.released = make(chan struct{})
}

// add registers p, unless the caller is the goroutine reading the Conn: a
// handler under Serve, or a WithUnmatched handler run by a leading call.
func (l *line) add(p *call) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reader != readerNone && l.readerG != 0 && l.readerG == goid() {
		return &OpError{Op: "call", Err: ErrCallInHandler}
	}
	l.calls = append(l.calls, p)
	l.ncalls.Store(int32(len(l.calls)))
	return nil
}

// remove unregisters p. Replies still queued for it are counted in
// Stats.Unclaimed: they were claimed, so nothing else will see them.
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
	if n := len(p.queue); n > 0 {
		l.c.counters.unclaimed.Add(uint64(n))
		p.queue = nil
	}
}

// take returns the replies queued for p, and the panic that ended it (of
// its Match or of its WithUnmatched handler), if any.
func (l *line) take(p *call) ([]reply, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := p.queue
	p.queue = nil
	return q, p.failed
}

// lead makes p the reader if nobody reads and it has no replies waiting.
// Otherwise it returns the channel that closes when the reader stops (nil
// if replies are waiting).
func (l *line) lead(p *call) (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(p.queue) > 0 || p.failed != nil {
		return false, nil
	}
	if l.reader == readerNone && !l.serveWant {
		l.reader, l.readerG = readerCall, goid()
		return true, nil
	}
	return false, l.released
}

func (l *line) unlead() {
	l.mu.Lock()
	l.reader, l.readerG = readerNone, 0
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
		if len(msgs) > 0 && l.deliverRead(p, msgs, from) {
			return nil
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

// deliverRead hands the messages of one datagram that the leading call p
// read to the calls that claim them, and the rest to a WithUnmatched
// handler, or counts them in Stats.Unclaimed: nothing read is lost
// silently. A handler that panics ends its call with the panic, and the
// rest go to another handler. It reports whether p is done: it has replies
// or it failed.
func (l *line) deliverRead(p *call, msgs []Message, from Sender) bool {
	var others []Message
	l.mu.Lock()
	for _, m := range msgs {
		if !l.claimLocked(m, from, false) {
			others = append(others, m)
		}
	}
	done := len(p.queue) > 0 || p.failed != nil
	var owner *call
	if len(others) > 0 {
		owner = l.unmatchedLocked(p)
	}
	l.mu.Unlock()
	for i, m := range others {
		if owner == nil {
			l.c.counters.unclaimed.Add(uint64(len(others) - i))
			break
		}
		pe := dispatch(owner.unmatched, Request{Msg: m, From: from, conn: l.c})
		if pe == nil {
			continue
		}
		pe.fn = "WithUnmatched handler"
		l.mu.Lock()
		l.failLocked(owner, pe)
		done = done || owner == p
		owner = l.unmatchedLocked(p)
		l.mu.Unlock()
	}
	return done
}

// failLocked ends the waiting call p with err (a panic of its own code):
// it claims nothing more, and returns err when it wakes.
func (l *line) failLocked(p *call, err error) {
	if p.failed == nil {
		p.failed = err
	}
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// unmatchedLocked returns the call whose WithUnmatched handler takes what
// a leading call reads that no call claims: the leader, else any waiting
// call with one; nil if none has one. A call that failed is passed over.
func (l *line) unmatchedLocked(leader *call) *call {
	if leader.unmatched != nil && leader.failed == nil {
		return leader
	}
	for _, q := range l.calls {
		if q.unmatched != nil && q.failed == nil {
			return q
		}
	}
	return nil
}

// claim offers m to the waiting calls; it reports whether one took it.
// With copyData the message is copied first, as Serve's [Reader] reuses its
// buffer. A claimed message is counted in n (MuxStats.Claimed) before its
// call can see it, so that the count never lags what a caller has got.
func (l *line) claim(m Message, from Sender, copyData bool, n *atomic.Uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.claimLockedCounted(m, from, copyData, n)
}

func (l *line) claimLocked(m Message, from Sender, copyData bool) bool {
	return l.claimLockedCounted(m, from, copyData, nil)
}

func (l *line) claimLockedCounted(m Message, from Sender, copyData bool, n *atomic.Uint64) bool {
	for _, p := range l.calls {
		if p.failed != nil || (p.limit > 0 && p.claimed >= p.limit) || !p.to.accepts(from) {
			continue
		}
		ok, pe := safeMatch(p.match, p.req, m, from)
		if pe != nil {
			// The Match is broken: end its call with the panic, and offer
			// the message to the others.
			l.failLocked(p, pe)
			continue
		}
		if !ok {
			continue
		}
		if copyData {
			m.Data = append([]byte(nil), m.Data...)
		}
		p.queue = append(p.queue, reply{m: m, from: from})
		p.claimed++
		if n != nil {
			n.Add(1)
		}
		select {
		case p.notify <- struct{}{}:
		default:
		}
		return true
	}
	return false
}

// safeMatch calls a Match and recovers its panic, which it returns.
func safeMatch(match Match, req, m Message, from Sender) (ok bool, pe *PanicError) {
	defer func() {
		if v := recover(); v != nil {
			ok, pe = false, &PanicError{ID: m.ID, Value: v, Stack: debug.Stack(), fn: "Match"}
		}
	}()
	return match(req, m, from), nil
}

// goid returns the calling goroutine's id, parsed from the first line of
// its stack trace ("goroutine 18 [running]:"), or 0 if that line has
// another shape, which turns the check off (a Call in a handler then
// deadlocks, as without the check; it is never refused wrongly). It serves
// only to detect a Call made from the goroutine that reads the same Conn.
//
// Why the goroutine's identity and not a marker carried through the
// handler's call path: Call takes a context and a Conn, nothing of the
// handler's. A marker in the Request, or in a context Serve would give the
// handler, reaches Call only if the handler passes it on; a handler that
// calls with context.Background() or a context of its own, as the docs
// allow, would deadlock without an error. Only the identity of the reading
// goroutine catches every such call. The header has had this shape since
// Go 1.0, goroutine ids are never reused within a process (newproc1 gives
// each new goroutine a new one), and TestGoid guards the parse. What
// neither way can see: a handler that hands the Call to another goroutine
// and waits for it; the docs point to Queue for calls from handlers.
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
