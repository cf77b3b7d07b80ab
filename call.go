package connector

import (
	"context"
	"errors"
	"fmt"
)

// A Destination says where Call and [Exchange] send a request. The zero value
// is the kernel (port 0), where the agent registered for the message's id
// receives it: use Destination{} for the kernel.
//
// ToPort(0) and ToGroup(0) are not the kernel: they name a userspace socket
// or a group that cannot exist, most likely a port id or group number left
// unset, and a Call to either fails at once with an error that says so
// (matching [ErrInvalidDestination] and [ErrInvalidGroup] respectively)
// instead of sending the request to the kernel.
type Destination struct {
	// Port is a userspace socket's port id (Conn.PortID). 0 means the
	// kernel, or a group if Group is set.
	Port uint32
	// Group, if not 0, multicasts the request on that group; Port must
	// then be 0.
	Group Group

	// zero records ToPort(0) or ToGroup(0): set only then, so that
	// ToPort(p) == Destination{Port: p} for every valid p.
	zero destZero
}

// destZero marks a Destination made by ToPort(0) or ToGroup(0).
type destZero uint8

const (
	zeroPort destZero = 1 + iota
	zeroGroup
)

// ToPort returns the Destination of the userspace socket with the given
// port id, as [Conn.PortID] reports it. No socket has port 0, which is the
// kernel's: a Call to ToPort(0) fails with an error matching
// [ErrInvalidDestination] (use Destination{} for the kernel).
func ToPort(port uint32) Destination {
	if port == 0 {
		return Destination{zero: zeroPort}
	}
	return Destination{Port: port}
}

// ToGroup returns the Destination of every socket that joined group g, 1 to
// [MaxGroup]. A Call to a group out of that range, 0 included, fails with an
// error matching [ErrInvalidGroup] (use Destination{} for the kernel).
func ToGroup(g Group) Destination {
	if g == 0 {
		return Destination{zero: zeroGroup}
	}
	return Destination{Group: g}
}

// Kernel reports whether d is the kernel: the zero Destination.
func (d Destination) Kernel() bool { return d.Port == 0 && d.Group == 0 && d.zero == 0 }

func (d Destination) String() string {
	switch {
	case d.Group != 0 || d.Port == 0 && d.zero == zeroGroup:
		return fmt.Sprintf("group %d", d.Group)
	case d.Port != 0 || d.zero == zeroPort:
		return fmt.Sprintf("port %d", d.Port)
	}
	return "the kernel"
}

// check reports a Destination that names nothing a request can reach.
func (d Destination) check() error {
	switch {
	case d.Port == 0 && d.Group == 0 && d.zero == zeroPort:
		return errPortZero("ToPort(0)", "Destination{}")
	case d.Port == 0 && d.Group == 0 && d.zero == zeroGroup:
		return fmt.Errorf("%w: ToGroup(0): groups are numbered 1 to %d, and 0 is none (the zero Destination{} is the kernel)", ErrInvalidGroup, MaxGroup)
	case d.Port != 0 && d.Group != 0:
		return fmt.Errorf("%w: it has both port %d and group %d: set one", ErrInvalidDestination, d.Port, d.Group)
	case d.Group != 0 && !d.Group.Valid():
		return fmt.Errorf("%w: %d is out of range: connector groups are numbered 1 to %d", ErrInvalidGroup, d.Group, MaxGroup)
	}
	return nil
}

// errPortZero is the error of a send to port 0 where a userspace socket is
// meant: what names port 0, and what reaches the kernel instead.
func errPortZero(what, kernel string) error {
	return fmt.Errorf("%w: %s: port 0 is the kernel, not a userspace socket (was the port id left unset?); use %s to send to the kernel", ErrInvalidDestination, what, kernel)
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

// A CallOption configures a Call or an Exchange.
type CallOption func(*call)

// WithUnmatched makes the call hand h every message that it reads from the
// Conn itself (when no Serve runs on the Conn) and that no waiting call
// claims, instead of counting it in [Stats].Unclaimed and dropping it: for
// example the events that arrive between a subscription request and its
// acknowledgement. Give it the [Mux] whose routes should get them (a Mux is
// a Handler, see [Mux.ServeConnector]) and a call made while that Mux is
// not serving loses nothing that the Mux would have routed.
//
// h runs on the goroutine of the call that reads, in arrival order, one
// message at a time; the Request's message is h's to keep. When several
// waiting calls have one, the reading call's own is used, else another's.
// A panic in h is recovered and ends the call that gave h with an error
// matching [ErrHandlerPanic] (a *[PanicError]); its later messages go to
// another call's handler, or are counted. Under Serve, such messages are
// routed by the Mux as usual and h is not called.
func WithUnmatched(h Handler) CallOption {
	return func(p *call) { p.unmatched = h }
}

// ErrCallInHandler reports a Call or [Exchange] made on a Conn from the
// goroutine that reads it (a Mux handler or [ServeOptions.OnError] under
// [Mux.Serve], or a [WithUnmatched] handler run by a call that reads the
// Conn itself): the reply could only be read by that same goroutine, which
// is busy waiting, so the call fails at once instead of deadlocking. Make
// the call from another goroutine, for example by wrapping the handler in a
// [Queue].
var ErrCallInHandler = errors.New("a Call on a Conn from inside a handler serving that Conn would deadlock: its reply can only be read by the busy reader (the Serve loop, or the call running the handler); call from another goroutine (wrap the handler in a Queue)")

// Call sends req to to and waits for the first reply that match accepts,
// which it returns with its sender. The reply is a copy the caller owns.
// A Call claims that one reply only: a later message that match would
// accept too (a duplicate reply) is routed or handed on as if the call had
// ended. See [Exchange] for how replies are read and what can fail.
func Call(ctx context.Context, c *Conn, req Message, to Destination, match Match, opts ...CallOption) (Message, Sender, error) {
	var reply Message
	var from Sender
	got := false
	// A Call claims one reply: a second match (a duplicate, or another
	// requester's reply that the Match also accepts) is routed as usual.
	err := exchange(ctx, c, req, to, match, func(m Message, f Sender) bool {
		reply, from, got = m, f, true
		return false
	}, 1, opts)
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
//     waiting call are given to the handler of [WithUnmatched] (a [Mux],
//     for one), or else counted in [Stats].Unclaimed ([Conn.Stats]) and
//     dropped. Do not read c in other ways (Receive, a [Reader]) while such
//     a call waits: the two readers would take each other's messages.
//
// Replies that match are claimed (no route sees them) until fn returns
// false; those claimed but not yet given to fn when Exchange returns are
// counted in [Stats].Unclaimed.
//
// Any number of calls may wait on one Conn at once, from any goroutines. A
// call made from the goroutine that reads c (a handler, OnError, or a
// WithUnmatched handler) fails at once with [ErrCallInHandler]: it would
// wait for itself.
//
// A request to the kernel for an id that no kernel agent has registered
// fails at once with an error matching [ErrNoAgent], where the Conn can tell
// (see [Conn.Agents]); the kernel would drop it silently. Otherwise nothing
// tells a sender that a request went unheard: always give ctx a deadline.
// A nil ctx, c, match or fn fails at once with an error that names it.
// Errors: ctx.Err() when ctx ends, [ErrClosed], [ErrNoAgent],
// [ErrCallInHandler], [ErrHandlerPanic] when match or the WithUnmatched
// handler panicked (a *[PanicError]; a panic in fn itself is not
// recovered), and the send's errors (os.ErrPermission for a port or group
// without CAP_NET_ADMIN), each in an *OpError. Overruns while waiting are counted in
// [Conn.Stats] and, under Serve, reported through [ServeOptions.OnError]; a
// reply lost to one shows up as the ctx's deadline.
//
// [Exchange] manages c's read deadline while it reads: do not set one yourself
// while calls are waiting.
func Exchange(ctx context.Context, c *Conn, req Message, to Destination, match Match, fn func(reply Message, from Sender) bool, opts ...CallOption) error {
	return exchange(ctx, c, req, to, match, fn, 0, opts)
}

// exchange is Exchange claiming at most limit replies (0: no limit).
func exchange(ctx context.Context, c *Conn, req Message, to Destination, match Match, fn func(reply Message, from Sender) bool, limit int, opts []CallOption) error {
	switch {
	case ctx == nil:
		return &OpError{Op: "call", Err: errors.New("ctx is nil: give the call a context, with a deadline (the kernel drops requests nobody hears)")}
	case !c.usable():
		return &OpError{Op: "call", Err: errNoConn}
	case match == nil:
		return &OpError{Op: "call", Err: errors.New("nil Match")}
	case fn == nil:
		return &OpError{Op: "call", Err: errors.New("nil reply function")}
	}
	if err := to.check(); err != nil {
		return &OpError{Op: "call", Err: err}
	}
	if err := ctx.Err(); err != nil {
		return &OpError{Op: "call", Err: err}
	}
	if to.Kernel() {
		if err := c.checkAgent(req.ID); err != nil {
			return err
		}
	}
	l := lineOf(c)
	p := &call{req: req, to: to, match: match, limit: limit, notify: make(chan struct{}, 1)}
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
		q, failed := l.take(p)
		for i, r := range q {
			if !fn(r.m, r.from) {
				// Claimed, so routed nowhere else: count what fn
				// will not see.
				if n := len(q) - 1 - i; n > 0 {
					c.counters.unclaimed.Add(uint64(n))
				}
				return nil
			}
		}
		if failed != nil {
			return &OpError{Op: "call", Err: failed}
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
	limit     int           // claim at most this many replies (0: no limit)
	claimed   int           // replies claimed so far, under line.mu
	failed    error         // a panic of its Match or unmatched handler, under line.mu
	queue     []reply       // claimed replies, under line.mu
	notify    chan struct{} // capacity 1: a reply was queued, or the call failed
}

type reply struct {
	m    Message
	from Sender
}
