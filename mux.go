package connector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// A Request is one message received by [Mux.Serve], with its sender and a way
// to answer on the Conn it came in on.
//
// Msg.Data aliases the [Reader]'s buffer: it is valid only until the handler
// returns. Copy what you keep, or wrap the handler in a [Queue], which hands
// it a copy.
type Request struct {
	// Msg is the received message.
	Msg Message
	// From is its sender: port 0 is the kernel.
	From Sender

	conn *Conn
}

// Conn returns the Conn the request arrived on.
func (r Request) Conn() *Conn { return r.conn }

// Reply sends m back to the sender of r: to the kernel ([Conn.Send]) when the
// kernel sent r, otherwise by unicast to the sender's port ([Conn.SendTo]),
// also when r was multicast on a group. Setting m's Seq and Ack is up to the
// protocol (connector.rst's convention is m.Seq = r.Msg.Seq, m.Ack =
// r.Msg.Ack+1; see [MatchGenealogy]). Replying to a userspace port needs
// CAP_NET_ADMIN.
func (r Request) Reply(m Message) error {
	if r.conn == nil {
		return &OpError{Op: "reply", Err: errors.New("the Request did not come from Mux.Serve: it has no Conn to reply on")}
	}
	if r.From.Port == 0 {
		return r.conn.Send(m)
	}
	return r.conn.SendTo(r.From.Port, m)
}

// A Handler handles the messages a Mux routes to it.
//
// ServeConnector runs on the goroutine of [Mux.Serve], one message at a time
// in socket order: while it runs, nothing else is read from the socket.
// A handler that blocks stalls the Conn, and through it the kernel: the
// kernel drops multicasts for a socket that is not read ([ErrOverrun]), and a
// w1 bus master's kernel thread waits for a client that does not read its
// unicast replies. Do slow work elsewhere, or wrap the handler in a [Queue].
// Req.Msg.Data is valid only during the call.
type Handler interface {
	ServeConnector(req Request)
}

// A HandlerFunc is a function used as a Handler.
type HandlerFunc func(req Request)

// ServeConnector calls f(req).
func (f HandlerFunc) ServeConnector(req Request) { f(req) }

// A Mux routes received messages to handlers by callback id: the userspace
// side of the connector's "one callback per id" design.
//
// A message goes to the first of:
//
//  1. a Call or [Exchange] on the same Conn that is waiting for it (see Call);
//  2. the handler registered for its exact id (Handle);
//  3. the handler registered for its index, any value (HandleIndex);
//  4. the NotFound handler;
//
// and is otherwise counted in [MuxStats.Unrouted].
//
// A Mux is safe for concurrent use: routes may be added and removed while
// Serve runs, without locks on the receive path. One Mux may serve several
// Conns at once. A Mux is also a [Handler] ([Mux.ServeConnector]): mount it
// on another Mux's route, or hand it to [WithUnmatched].
type Mux struct {
	mu    sync.Mutex // serializes writers of table
	table atomic.Pointer[routeTable]

	dispatched, unrouted, claimed, panics, errs, foreign atomic.Uint64
}

// A routeTable is an immutable snapshot of the routes: writers copy it.
type routeTable struct {
	exact    map[uint64]*Route // by idKey: a uint64 key takes the map's fast path
	index    map[uint32]*Route
	notFound Handler
}

// A Route is one registration on a Mux.
type Route struct {
	mx    *Mux
	id    CBID
	index bool // registered with HandleIndex: id.Val is ignored
	h     Handler
}

// NewMux returns an empty Mux.
func NewMux() *Mux {
	mx := &Mux{}
	mx.table.Store(&routeTable{})
	return mx
}

// Handle registers h for messages with exactly the callback id id and
// returns the registration. It panics if h is nil or if id already has a
// handler (remove that one first), as net/http.ServeMux does for
// conflicting patterns: two owners of one id is a bug.
func (mx *Mux) Handle(id CBID, h Handler) *Route {
	if h == nil {
		panic("connector: Mux.Handle: nil handler for " + id.String())
	}
	r := &Route{mx: mx, id: id, h: h}
	mx.update(func(t *routeTable) {
		if _, dup := t.exact[idKey(id)]; dup {
			panic("connector: Mux.Handle: id " + id.String() + " already has a handler")
		}
		t.exact[idKey(id)] = r
	})
	return r
}

// HandleFunc registers f for id, like Handle.
func (mx *Mux) HandleFunc(id CBID, f func(Request)) *Route {
	if f == nil {
		panic("connector: Mux.HandleFunc: nil handler for " + id.String())
	}
	return mx.Handle(id, HandlerFunc(f))
}

// HandleIndex registers h for every message whose id has index idx,
// whatever its value; handlers registered with Handle for an exact id take
// precedence. It panics if h is nil or idx already has an index handler.
func (mx *Mux) HandleIndex(idx uint32, h Handler) *Route {
	if h == nil {
		panic(fmt.Sprintf("connector: Mux.HandleIndex: nil handler for index %d", idx))
	}
	r := &Route{mx: mx, id: CBID{Idx: idx}, index: true, h: h}
	mx.update(func(t *routeTable) {
		if _, dup := t.index[idx]; dup {
			panic(fmt.Sprintf("connector: Mux.HandleIndex: index %d already has a handler", idx))
		}
		t.index[idx] = r
	})
	return r
}

// NotFound sets the handler for messages that no route matches; nil
// removes it. Without one such messages are counted in [MuxStats.Unrouted].
func (mx *Mux) NotFound(h Handler) {
	mx.update(func(t *routeTable) { t.notFound = h })
}

// Remove unregisters the route. Messages that arrive afterwards are routed
// as if it had never existed; a call of its handler that is already running
// finishes. Removing a route twice does nothing.
func (r *Route) Remove() {
	r.mx.update(func(t *routeTable) {
		if r.index {
			if t.index[r.id.Idx] == r {
				delete(t.index, r.id.Idx)
			}
		} else if t.exact[idKey(r.id)] == r {
			delete(t.exact, idKey(r.id))
		}
	})
}

// update applies f to a copy of the table and publishes it.
func (mx *Mux) update(f func(*routeTable)) {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	old := mx.table.Load()
	if old == nil {
		old = &routeTable{}
	}
	t := &routeTable{exact: make(map[uint64]*Route, len(old.exact)+1), index: make(map[uint32]*Route, len(old.index)+1), notFound: old.notFound}
	for k, v := range old.exact {
		t.exact[k] = v
	}
	for k, v := range old.index {
		t.index[k] = v
	}
	f(t)
	mx.table.Store(t)
}

func idKey(id CBID) uint64 { return uint64(id.Idx)<<32 | uint64(id.Val) }

// lookup returns the handler for id, or nil.
func (t *routeTable) lookup(id CBID) Handler {
	if t == nil {
		return nil // a zero Mux: no routes yet
	}
	if r := t.exact[idKey(id)]; r != nil {
		return r.h
	}
	if len(t.index) > 0 {
		if r := t.index[id.Idx]; r != nil {
			return r.h
		}
	}
	return t.notFound
}

// MuxStats are a Mux's counters since NewMux, summed over every Conn it
// served.
type MuxStats struct {
	// Dispatched counts messages passed to a handler (NotFound included).
	Dispatched uint64
	// Unrouted counts messages that matched no route and no waiting call,
	// with no NotFound handler set.
	Unrouted uint64
	// Claimed counts messages handed to a waiting Call or [Exchange].
	Claimed uint64
	// Panics counts handler panics that Serve recovered.
	Panics uint64
	// Errors counts receive errors reported while serving (overruns,
	// truncated or malformed datagrams).
	Errors uint64
	// Foreign counts messages dropped because a userspace port sent them
	// with the id of a kernel agent (index 1 to 10), which only the kernel
	// (port 0) may use; see [Mux.Serve].
	Foreign uint64
}

// Stats returns the Mux's counters.
func (mx *Mux) Stats() MuxStats {
	return MuxStats{
		Dispatched: mx.dispatched.Load(),
		Unrouted:   mx.unrouted.Load(),
		Claimed:    mx.claimed.Load(),
		Panics:     mx.panics.Load(),
		Errors:     mx.errs.Load(),
		Foreign:    mx.foreign.Load(),
	}
}

// ServeOptions configure [Mux.Serve]. A nil *ServeOptions means the defaults.
type ServeOptions struct {
	// OnError is called on Serve's goroutine with every condition Serve
	// survives: receive errors matching [ErrOverrun] (the kernel dropped
	// messages), [ErrTruncated] and [ErrMalformed], and handler panics (an
	// error matching [ErrHandlerPanic] that holds a *[PanicError]). Serve goes
	// on after it returns; cancel Serve's context to stop. Nil means the
	// conditions are only counted ([MuxStats], [Conn.Stats]).
	OnError func(err error)

	// OnStart, if not nil, is called by [Mux.Serve] with its Conn as soon
	// as Serve has become the Conn's reader, before it reads anything:
	// from then until Serve returns, every message the Conn receives goes
	// through this Serve, and a Call or [Exchange] on the Conn gets its
	// replies from it instead of reading the socket itself. Use it to wait
	// until a Serve started on another goroutine is serving, for example
	// by closing a channel (and wait for Serve's result at the same time:
	// a Serve that fails to start, because another Serve runs on the Conn
	// or the Conn is closed, does not call it). It runs on Serve's
	// goroutine, once per Serve call; Serve reads nothing until it returns,
	// so it must not block. A panic in it is recovered, counted and
	// reported like a handler's.
	OnStart func(c *Conn)
}

// ErrHandlerPanic matches the error reported through [ServeOptions.OnError]
// when a handler panicked. errors.As finds the *[PanicError] with the details.
var ErrHandlerPanic = errors.New("handler panicked")

// A PanicError reports a panic that the package recovered: of a handler
// under [Mux.Serve], of a [ServeOptions.OnStart] function, or of a call's
// [Match] or [WithUnmatched] handler (which ends that call with it).
type PanicError struct {
	// ID is the callback id of the message the function was given (zero
	// for OnStart).
	ID CBID
	// Value is what the function panicked with.
	Value any
	// Stack is the panicking goroutine's stack trace.
	Stack []byte

	fn string // what panicked, "handler" if empty
}

func (e *PanicError) Error() string {
	fn := e.fn
	if fn == "" {
		fn = "handler"
	}
	if fn == "OnStart" {
		return fmt.Sprintf("ServeOptions.OnStart panicked: %v", e.Value)
	}
	return fmt.Sprintf("%s for %v panicked: %v", fn, e.ID, e.Value)
}

// Is makes a *[PanicError] match [ErrHandlerPanic].
func (e *PanicError) Is(target error) bool { return target == ErrHandlerPanic }

// Serve reads c and dispatches every message inline, one at a time in
// socket order, until ctx is done or c is closed. It reads with a [Reader]
// (no allocation per message) and first offers each message to the Calls
// and Exchanges waiting on c, then to the routes (see Mux).
//
// A message that a userspace port sent with a kernel agent's id (index 1
// to 10, CN_NETLINK_USERS-1) is a spoof of that agent: Serve drops it and
// counts it in [MuxStats].Foreign, unless the Conn's Config.Senders is
// SendersAny.
//
// Serve survives everything else: receive errors matching [ErrOverrun],
// [ErrTruncated] and [ErrMalformed], and handler panics, which it recovers, are
// counted in [MuxStats] and reported through opts.OnError, and serving goes
// on. It returns an error matching ctx.Err() (context.Canceled or
// context.DeadlineExceeded) when ctx ends, [ErrClosed] when c is closed, and
// any other receive error, all wrapped in an *OpError with Op "serve".
// Messages that were already read from the socket are dispatched before it
// returns, so cancellation loses none of them; when c is closed, those not
// yet dispatched are counted in [Stats].Unread before Serve returns.
//
// Serve manages c's read deadline (it wakes the receive through it when ctx
// ends): do not set one yourself while it runs. Only one Serve may run on a
// Conn at a time; a second one fails at once. Calls may run on c at the same
// time from other goroutines; a Call made on c from inside a handler fails
// with [ErrCallInHandler] (see Call). A nil ctx, c or Mux is an error
// too, in an *OpError with Op "serve" that names it.
func (mx *Mux) Serve(ctx context.Context, c *Conn, opts *ServeOptions) error {
	switch {
	case mx == nil:
		return &OpError{Op: "serve", Err: errors.New("nil *Mux: make one with NewMux")}
	case !c.usable():
		return &OpError{Op: "serve", Err: errNoConn}
	case ctx == nil:
		return &OpError{Op: "serve", Err: errors.New("ctx is nil: give Serve a context (context.Background() to serve until the Conn is closed)")}
	}
	var onErr func(error)
	var onStart func(*Conn)
	if opts != nil {
		onErr, onStart = opts.OnError, opts.OnStart
	}
	l := lineOf(c)
	if err := l.startServe(ctx); err != nil {
		return err
	}
	defer l.stopServe()
	stop := l.interruptOn(ctx)
	defer stop()
	if onStart != nil {
		mx.started(c, onStart, onErr)
	}

	// Under SendersDefault and SendersKernelOnly, a kernel agent's id is
	// the kernel's alone (the Conn already applies that to multicasts on
	// the kernel groups; this covers unicasts).
	kernelIDs := c.cfg.Senders != SendersAny
	r := c.NewReader()
	defer r.Release()
	for {
		m, from, err := r.Next()
		if err != nil {
			switch {
			case errors.Is(err, ErrClosed):
				return &OpError{Op: "serve", Err: errClosed}
			case errors.Is(err, ErrFlushed):
				// [Conn.Flush]: everything queued has been dispatched.
				continue
			case errors.Is(err, os.ErrDeadlineExceeded):
				if cerr := l.rearm(ctx); cerr != nil {
					return serveErr(cerr)
				}
				continue
			case errors.Is(err, ErrOverrun), errors.Is(err, ErrTruncated), errors.Is(err, ErrMalformed):
				mx.errs.Add(1)
				if onErr != nil {
					mx.report(onErr, err)
				}
				continue
			}
			return serveErr(err)
		}
		mx.deliver(l, c, m, from, kernelIDs, onErr)
	}
}

// started calls Serve's OnStart function, recovering a panic.
func (mx *Mux) started(c *Conn, onStart func(*Conn), onErr func(error)) {
	pe := func() (pe *PanicError) {
		defer func() {
			if v := recover(); v != nil {
				pe = &PanicError{Value: v, Stack: debug.Stack(), fn: "OnStart"}
			}
		}()
		onStart(c)
		return nil
	}()
	if pe != nil {
		mx.panics.Add(1)
		if onErr != nil {
			mx.report(onErr, &OpError{Op: "serve", Err: pe})
		}
	}
}

// deliver routes one received message: the per-message work of Serve.
func (mx *Mux) deliver(l *line, c *Conn, m Message, from Sender, kernelIDs bool, onErr func(error)) {
	if kernelIDs && isSpoof(m, from) {
		mx.foreign.Add(1)
		return
	}
	if l.ncalls.Load() != 0 && l.claim(m, from, true, &mx.claimed) {
		return
	}
	h := mx.route(m.ID)
	if h == nil {
		return
	}
	if pe := dispatch(h, Request{Msg: m, From: from, conn: c}); pe != nil {
		mx.panics.Add(1)
		if onErr != nil {
			mx.report(onErr, &OpError{Op: "serve", Err: pe})
		}
	}
}

// isSpoof reports whether a userspace port sent m with a kernel agent's id
// (index 1 to 10).
func isSpoof(m Message, from Sender) bool {
	return from.Port != 0 && m.ID.Idx-1 < NetlinkUsers-1
}

// route returns the handler for id and counts the message as dispatched, or
// returns nil and counts it as unrouted.
func (mx *Mux) route(id CBID) Handler {
	h := mx.table.Load().lookup(id)
	if h == nil {
		mx.unrouted.Add(1)
		return nil
	}
	mx.dispatched.Add(1)
	return h
}

// ServeConnector routes req as [Mux.Serve] routes what it reads (except
// that no waiting call is offered it): to the handler of its exact id, else
// of its index, else to the NotFound handler, or counts it in
// [MuxStats].Unrouted; a userspace sender's message with a kernel agent's
// id is dropped and counted in [MuxStats].Foreign unless req's Conn accepts
// SendersAny. A Mux is thus a [Handler] itself: mount one under another
// Mux's route, or give it to [WithUnmatched] so that what a Call reads
// while no Serve runs reaches the same routes. The handler runs on the
// caller's goroutine and a panic in it is not recovered here: the caller
// recovers it ([Mux.Serve], a [Queue], a call reading the Conn).
func (mx *Mux) ServeConnector(req Request) {
	if (req.conn == nil || req.conn.cfg.Senders != SendersAny) && isSpoof(req.Msg, req.From) {
		mx.foreign.Add(1)
		return
	}
	if h := mx.route(req.Msg.ID); h != nil {
		h.ServeConnector(req)
	}
}

// dispatch calls h and recovers a panic. It returns nil unless h panicked.
func dispatch(h Handler, req Request) (pe *PanicError) {
	defer func() {
		if v := recover(); v != nil {
			pe = &PanicError{ID: req.Msg.ID, Value: v, Stack: debug.Stack()}
		}
	}()
	h.ServeConnector(req)
	return nil
}

// report calls onErr, which may itself panic: that is recovered too, so
// that a faulty error callback cannot end Serve.
func (mx *Mux) report(onErr func(error), err error) {
	defer func() {
		if v := recover(); v != nil {
			mx.panics.Add(1)
		}
	}()
	onErr(err)
}
