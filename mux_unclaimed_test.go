package connector_test

// Serve's start hook, the Mux as a Handler, and the accounting of every
// message a Call or Exchange reads: each one is claimed, handed on, or
// counted, never dropped silently.

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

// agentSends registers a fake agent for id that answers each request by
// queuing, on the requester's socket, one datagram per element of dgrams:
// each datagram bundles the messages the element returns for the request.
func agentSends(t *testing.T, k *cntest.Kernel, id connector.CBID, dgrams ...func(req connector.Message) []connector.Message) {
	t.Helper()
	k.Handle(id, func(req connector.Message, from connector.Sender) []cntest.Reply {
		for _, f := range dgrams {
			b, err := cntest.Bundle(f(req)...)
			if err == nil {
				err = k.InjectRaw(from.Port, connector.Sender{}, b)
			}
			if err != nil {
				t.Errorf("agent %v: %v", id, err)
			}
		}
		return nil
	})
}

// answer is the reply to req under MatchSeqAck.
func answer(req connector.Message, data string) connector.Message {
	return connector.Message{ID: req.ID, Seq: req.Seq, Ack: req.Seq + 1, Data: []byte(data)}
}

// counted checks the Conn's Unclaimed counter.
func counted(t *testing.T, c *connector.Conn, want uint64) {
	t.Helper()
	if got := c.Stats().Unclaimed; got != want {
		t.Errorf("Stats().Unclaimed = %d, want %d", got, want)
	}
}

func TestServeOnStart(t *testing.T) {
	k := newKernel()
	agentSends(t, k, idB, func(req connector.Message) []connector.Message { return []connector.Message{answer(req, "re")} })
	c := dialT(t, k)
	mx := connector.NewMux()
	seen := make(chan got, 4)
	mx.HandleFunc(idA, recorder("A", seen))
	// Queued before Serve starts: read by Serve, after OnStart.
	if err := k.Unicast(c.PortID(), connector.Message{ID: idA, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	var starts atomic.Int32
	started := make(chan *connector.Conn, 1)
	opts := &connector.ServeOptions{OnStart: func(sc *connector.Conn) {
		starts.Add(1)
		if n := mx.Stats().Dispatched; n != 0 {
			t.Errorf("OnStart ran after %d dispatches, want before any", n)
		}
		started <- sc
	}}
	_, done := serveT(t, mx, c, opts)
	select {
	case sc := <-started:
		if sc != c {
			t.Errorf("OnStart got Conn %p, want %p", sc, c)
		}
	case err := <-done:
		t.Fatalf("Serve returned %v before OnStart", err)
	case <-time.After(testTimeout):
		t.Fatal("OnStart not called")
	}
	if g := recv(t, seen); g.m.Seq != 1 {
		t.Errorf("Serve dispatched %+v, want seq 1", g.m)
	}
	// From OnStart on, Serve reads for the calls: the reply is claimed by
	// it, not read by the call.
	if _, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idB, Seq: 7}, connector.Destination{}, connector.MatchSeqAck); err != nil {
		t.Fatal(err)
	}
	if s := mx.Stats(); s.Claimed != 1 {
		t.Errorf("MuxStats %+v, want the reply claimed by Serve", s)
	}
	// A Serve that cannot start does not call OnStart.
	if err := mx.Serve(ctxT(t), c, opts); err == nil || !strings.Contains(err.Error(), "another Serve") {
		t.Errorf("second Serve: %v, want another Serve already runs", err)
	}
	if n := starts.Load(); n != 1 {
		t.Errorf("OnStart called %d times, want 1", n)
	}
}

func TestServeOnStartPanics(t *testing.T) {
	k := newKernel()
	c := dialT(t, k)
	mx := connector.NewMux()
	seen := make(chan got, 1)
	mx.HandleFunc(idA, recorder("A", seen))
	errs := make(chan error, 1)
	serveT(t, mx, c, &connector.ServeOptions{
		OnStart: func(*connector.Conn) { panic("start") },
		OnError: func(err error) { errs <- err },
	})
	select {
	case err := <-errs:
		var pe *connector.PanicError
		if !errors.Is(err, connector.ErrHandlerPanic) || !errors.As(err, &pe) || pe.Value != "start" || !strings.Contains(err.Error(), "OnStart panicked: start") {
			t.Errorf("OnError got %v, want OnStart's panic", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("OnStart's panic not reported")
	}
	// Serving goes on.
	if err := k.Unicast(c.PortID(), connector.Message{ID: idA, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if g := recv(t, seen); g.m.Seq != 3 {
		t.Errorf("got %+v", g.m)
	}
	if s := mx.Stats(); s.Panics != 1 {
		t.Errorf("MuxStats %+v, want 1 panic", s)
	}
}

// TestMuxAsHandler routes through Mux.ServeConnector, directly and with
// a Mux mounted on another Mux's index route.
func TestMuxAsHandler(t *testing.T) {
	mx := connector.NewMux()
	var a, nf []uint32
	mx.HandleFunc(idA, func(r connector.Request) { a = append(a, r.Msg.Seq) })
	mx.ServeConnector(connector.Request{Msg: connector.Message{ID: idA, Seq: 1}})
	mx.ServeConnector(connector.Request{Msg: connector.Message{ID: idC, Seq: 2}})
	// A userspace port sending as the process events connector: a spoof.
	mx.ServeConnector(connector.Request{Msg: connector.Message{ID: connector.IDProc, Seq: 3}, From: connector.Sender{Port: 77}})
	mx.NotFound(connector.HandlerFunc(func(r connector.Request) { nf = append(nf, r.Msg.Seq) }))
	mx.ServeConnector(connector.Request{Msg: connector.Message{ID: idC, Seq: 4}})
	if len(a) != 1 || a[0] != 1 || len(nf) != 1 || nf[0] != 4 {
		t.Errorf("route got %v, NotFound %v; want [1] and [4]", a, nf)
	}
	if s := mx.Stats(); s != (connector.MuxStats{Dispatched: 2, Unrouted: 1, Foreign: 1}) {
		t.Errorf("MuxStats %+v", s)
	}

	// Mounted: the outer Mux hands index 0x100 to the inner one.
	k := newKernel()
	c := dialT(t, k)
	inner := connector.NewMux()
	seen := make(chan got, 2)
	inner.HandleFunc(idB, recorder("inner B", seen))
	outer := connector.NewMux()
	outer.HandleIndex(idB.Idx, inner)
	serveT(t, outer, c, nil)
	if err := k.Unicast(c.PortID(), connector.Message{ID: idB, Seq: 5}, connector.Message{ID: idA, Seq: 6}); err != nil {
		t.Fatal(err)
	}
	if g := recv(t, seen); g.route != "inner B" || g.m.Seq != 5 {
		t.Errorf("got %+v", g)
	}
	if !testutil.WaitFor(testTimeout, func() bool { return inner.Stats().Unrouted == 1 }) {
		t.Fatal("timed out waiting for the inner Mux to count idA unrouted")
	}
	if o, i := outer.Stats(), inner.Stats(); o.Dispatched != 2 || i.Dispatched != 1 || i.Unrouted != 1 {
		t.Errorf("outer %+v, inner %+v", o, i)
	}
}

// TestCallUnmatchedToMux: a call reading the Conn itself, with the Mux as
// its WithUnmatched handler, delivers to the Mux's routes what Serve would
// have; without it, what it reads and nobody takes is counted.
func TestCallUnmatchedToMux(t *testing.T) {
	for _, withMux := range []bool{true, false} {
		name := "counted"
		if withMux {
			name = "to the Mux"
		}
		t.Run(name, func(t *testing.T) {
			k := newKernel()
			// Two unrelated messages, one in a datagram of its own and one
			// bundled with the reply.
			agentSends(t, k, idA,
				func(connector.Message) []connector.Message {
					return []connector.Message{{ID: idB, Seq: 100, Data: []byte("event")}}
				},
				func(req connector.Message) []connector.Message {
					return []connector.Message{{ID: idC, Seq: 101}, answer(req, "re")}
				})
			c := dialT(t, k)
			mx := connector.NewMux()
			seen := make(chan got, 2)
			mx.HandleFunc(idB, recorder("B", seen))
			var opts []connector.CallOption
			if withMux {
				opts = append(opts, connector.WithUnmatched(mx))
			}
			m, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA, Seq: 9}, connector.Destination{}, connector.MatchSeqAck, opts...)
			if err != nil || string(m.Data) != "re" {
				t.Fatalf("Call: %+v, %v", m, err)
			}
			if !withMux {
				counted(t, c, 2)
				return
			}
			counted(t, c, 0)
			if g := recv(t, seen); string(g.m.Data) != "event" {
				t.Errorf("route got %+v", g.m)
			}
			if s := mx.Stats(); s != (connector.MuxStats{Dispatched: 1, Unrouted: 1}) {
				t.Errorf("MuxStats %+v, want the event dispatched and the other unrouted", s)
			}
		})
	}
}

// TestCallClaimsOne: a Call takes one reply; a duplicate in the same
// datagram goes where unclaimed messages go, with or without Serve.
func TestCallClaimsOne(t *testing.T) {
	for _, serve := range []bool{false, true} {
		name := "alone"
		if serve {
			name = "under Serve"
		}
		t.Run(name, func(t *testing.T) {
			k := newKernel()
			agentSends(t, k, idA, func(req connector.Message) []connector.Message {
				return []connector.Message{answer(req, "first"), answer(req, "again")}
			})
			c := dialT(t, k)
			mx := connector.NewMux()
			seen := make(chan got, 2)
			mx.HandleFunc(idA, recorder("A", seen))
			if serve {
				serveStarted(t, mx, c)
			}
			m, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA, Seq: 4}, connector.Destination{}, connector.MatchSeqAck, connector.WithUnmatched(mx))
			if err != nil || string(m.Data) != "first" {
				t.Fatalf("Call: %+v, %v", m, err)
			}
			if g := recv(t, seen); string(g.m.Data) != "again" {
				t.Errorf("route got %+v, want the duplicate", g.m)
			}
			counted(t, c, 0)
		})
	}
}

// serveStarted runs Serve until the test ends and returns once it reads.
func serveStarted(t *testing.T, mx *connector.Mux, c *connector.Conn) {
	t.Helper()
	started := make(chan struct{})
	_, done := serveT(t, mx, c, &connector.ServeOptions{OnStart: func(*connector.Conn) { close(started) }})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
}

// TestExchangeLeftovers: replies an Exchange claimed but never gave to its
// function, because it returned false first, are counted; under Serve,
// those it had not claimed yet when it returned reach the route instead.
func TestExchangeLeftovers(t *testing.T) {
	for _, serve := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "under Serve"}[serve], func(t *testing.T) {
			k := newKernel()
			agentSends(t, k, idA, func(req connector.Message) []connector.Message {
				return []connector.Message{answer(req, "1"), answer(req, "2"), answer(req, "3")}
			})
			c := dialT(t, k)
			mx := connector.NewMux()
			var routed atomic.Uint64
			mx.HandleFunc(idA, func(connector.Request) { routed.Add(1) })
			if serve {
				serveStarted(t, mx, c)
			}
			n := 0
			err := connector.Exchange(ctxT(t), c, connector.Message{ID: idA, Seq: 4}, connector.Destination{}, connector.MatchSeqAck, func(connector.Message, connector.Sender) bool {
				n++
				return false
			})
			if err != nil || n != 1 {
				t.Fatalf("Exchange: %v after %d replies", err, n)
			}
			if !serve {
				counted(t, c, 2)
				return
			}
			// Every reply was claimed (and counted) or routed.
			if !testutil.WaitFor(testTimeout, func() bool { return c.Stats().Unclaimed+routed.Load() == 2 }) {
				t.Errorf("%d unclaimed and %d routed, want 2 in all", c.Stats().Unclaimed, routed.Load())
			}
			if s := mx.Stats(); s.Claimed+s.Dispatched != 3 {
				t.Errorf("MuxStats %+v: want 3 claimed or dispatched", s)
			}
		})
	}
}

// TestCallPanics: a panic in a call's Match or in its WithUnmatched handler
// ends that call at once with the panic, and the message goes on (to a
// route, or counted).
func TestCallPanics(t *testing.T) {
	boom := func(connector.Message, connector.Message, connector.Sender) bool { panic("match") }
	for _, tc := range []struct {
		name  string
		match connector.Match
		h     connector.Handler
		serve bool
		value string
	}{
		{"Match alone", boom, nil, false, "match"},
		{"Match under Serve", boom, nil, true, "match"},
		{"WithUnmatched", connector.MatchSeqAck, connector.HandlerFunc(func(connector.Request) { panic("unmatched") }), false, "unmatched"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKernel()
			agentSends(t, k, idA, func(req connector.Message) []connector.Message {
				return []connector.Message{{ID: idB, Seq: 1}, {ID: idB, Seq: 2}}
			})
			c := dialT(t, k)
			mx := connector.NewMux()
			var mu sync.Mutex
			var routed []uint32
			mx.HandleFunc(idB, func(r connector.Request) { mu.Lock(); routed = append(routed, r.Msg.Seq); mu.Unlock() })
			if tc.serve {
				serveStarted(t, mx, c)
			}
			var opts []connector.CallOption
			if tc.h != nil {
				opts = append(opts, connector.WithUnmatched(tc.h))
			}
			start := time.Now()
			_, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA, Seq: 4}, connector.Destination{}, tc.match, opts...)
			var pe *connector.PanicError
			if !errors.Is(err, connector.ErrHandlerPanic) || !errors.As(err, &pe) || pe.Value != tc.value || pe.ID != idB {
				t.Fatalf("Call: %v, want the %s panic on %v", err, tc.value, idB)
			}
			if d := time.Since(start); d > promptlyFake {
				t.Errorf("the call failed after %v", d)
			}
			if tc.serve {
				if !testutil.WaitFor(testTimeout, func() bool { mu.Lock(); defer mu.Unlock(); return len(routed) == 2 }) {
					t.Fatal("timed out waiting for both messages to be routed")
				}
				return
			}
			// Read by the call, which failed: nothing is routed. A broken
			// Match claims neither message, so both are counted; a broken
			// unmatched handler got the first, and the second is counted.
			want := uint64(2)
			if tc.h != nil {
				want = 1
			}
			counted(t, c, want)
		})
	}
}

// promptlyFake bounds what must not wait on a fake kernel.
const promptlyFake = 3 * time.Second

// TestCallInUnmatchedHandler: a WithUnmatched handler runs on the goroutine
// that reads the Conn, so a call it makes on that Conn fails at once with
// ErrCallInHandler instead of waiting for a reply only it could read.
func TestCallInUnmatchedHandler(t *testing.T) {
	k := newKernel()
	agentSends(t, k, idA, func(req connector.Message) []connector.Message {
		return []connector.Message{{ID: idB, Seq: 1}, answer(req, "re")}
	})
	agentSends(t, k, idC, func(req connector.Message) []connector.Message { return []connector.Message{answer(req, "inner")} })
	c := dialT(t, k)
	nested := errors.New("handler not called")
	h := connector.HandlerFunc(func(connector.Request) {
		_, _, nested = connector.Call(ctxT(t), c, connector.Message{ID: idC, Seq: 2}, connector.Destination{}, connector.MatchSeqAck)
	})
	start := time.Now()
	m, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA, Seq: 1}, connector.Destination{}, connector.MatchSeqAck, connector.WithUnmatched(h))
	if err != nil || string(m.Data) != "re" {
		t.Fatalf("Call: %+v, %v", m, err)
	}
	if !errors.Is(nested, connector.ErrCallInHandler) {
		t.Errorf("call from the WithUnmatched handler: %v, want ErrCallInHandler", nested)
	}
	if d := time.Since(start); d > promptlyFake {
		t.Errorf("took %v", d)
	}
}

// TestQueueOnErrorPanics: an onError that panics on the Queue's goroutine
// is recovered and counted, and the Queue goes on (an unrecovered panic
// there would end the program).
func TestQueueOnErrorPanics(t *testing.T) {
	done := make(chan uint32, 2)
	q, err := connector.NewQueue(connector.HandlerFunc(func(r connector.Request) {
		if r.Msg.Seq == 1 {
			panic("handler")
		}
		done <- r.Msg.Seq
	}), 4, func(error) { panic("onError") })
	if err != nil {
		t.Fatal(err)
	}
	q.ServeConnector(connector.Request{Msg: connector.Message{ID: idA, Seq: 1}})
	q.ServeConnector(connector.Request{Msg: connector.Message{ID: idA, Seq: 2}})
	select {
	case seq := <-done:
		if seq != 2 {
			t.Errorf("handled seq %d, want 2", seq)
		}
	case <-time.After(testTimeout):
		t.Fatal("the Queue stopped after onError panicked")
	}
	q.Close()
	if n := q.Panics(); n != 2 {
		t.Errorf("Panics() = %d, want 2 (the handler's and onError's)", n)
	}
}
