package connector_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

const testTimeout = 10 * time.Second

var (
	idA = connector.CBID{Idx: 0x100, Val: 1}
	idB = connector.CBID{Idx: 0x100, Val: 2}
	idC = connector.CBID{Idx: 0x200, Val: 7}
)

func newKernel() *cntest.Kernel { return cntest.New(nil) }

func dialT(t *testing.T, k *cntest.Kernel, groups ...connector.Group) *connector.Conn {
	t.Helper()
	c, err := k.Dial(&connector.Config{Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serveT runs mx.Serve on c until the test ends, and returns a channel
// that yields Serve's result.
func serveT(t *testing.T, mx *connector.Mux, c *connector.Conn, opts *connector.ServeOptions) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mx.Serve(ctx, c, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) && !errors.Is(err, connector.ErrClosed) {
				t.Errorf("Serve returned %v, want context.Canceled (or ErrClosed)", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return after cancel")
		}
	})
	return cancel, done
}

type got struct {
	route string
	m     connector.Message
	from  connector.Sender
}

// recorder returns a handler that sends a copy of what it gets on ch.
func recorder(route string, ch chan<- got) connector.HandlerFunc {
	return func(r connector.Request) {
		m := r.Msg
		m.Data = append([]byte(nil), m.Data...)
		ch <- got{route, m, r.From}
	}
}

func recv(t *testing.T, ch <-chan got) got {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(testTimeout):
		t.Fatal("no message dispatched")
		return got{}
	}
}

func TestMuxRouting(t *testing.T) {
	k := newKernel()
	srv := dialT(t, k, 20)
	peer := dialT(t, k)
	ch := make(chan got, 16)
	mx := connector.NewMux()
	mx.Handle(idA, recorder("exact A", ch))
	rIdx := mx.HandleIndex(idA.Idx, recorder("index 0x100", ch))
	mx.NotFound(recorder("not found", ch))
	serveT(t, mx, srv, nil)

	send := func(id connector.CBID, body string) {
		t.Helper()
		if err := peer.SendTo(srv.PortID(), connector.Message{ID: id, Seq: 9, Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		id    connector.CBID
		route string
	}{{idA, "exact A"}, {idB, "index 0x100"}, {idC, "not found"}} {
		send(tc.id, "x")
		g := recv(t, ch)
		if g.route != tc.route || g.m.ID != tc.id || string(g.m.Data) != "x" || g.from.Port != peer.PortID() || g.m.Seq != 9 {
			t.Errorf("message %v went to %q as %+v from %v, want %q from port %d", tc.id, g.route, g.m, g.from, tc.route, peer.PortID())
		}
	}
	// Multicast: the sender is the peer's port, on the group.
	if err := peer.Multicast(20, connector.Message{ID: idA, Data: []byte("m")}); err != nil {
		t.Fatal(err)
	}
	if g := recv(t, ch); g.route != "exact A" || g.from != (connector.Sender{Port: peer.PortID(), Group: 20}) {
		t.Errorf("multicast went to %q from %v", g.route, g.from)
	}

	rIdx.Remove()
	rIdx.Remove() // twice is harmless
	send(idB, "y")
	if g := recv(t, ch); g.route != "not found" {
		t.Errorf("after Remove, %v went to %q, want not found", idB, g.route)
	}
	mx.NotFound(nil)
	send(idC, "z")
	// Unrouted messages are counted; a routed one after it proves the count
	// is final.
	send(idA, "w")
	if g := recv(t, ch); g.route != "exact A" || string(g.m.Data) != "w" {
		t.Errorf("got %q %q, want exact A w", g.route, g.m.Data)
	}
	st := mx.Stats()
	if st.Unrouted != 1 || st.Dispatched != 6 {
		t.Errorf("stats %+v, want 1 unrouted and 6 dispatched", st)
	}
	// Re-registering a removed index works.
	mx.HandleIndex(idA.Idx, recorder("index again", ch))
	send(idB, "v")
	if g := recv(t, ch); g.route != "index again" {
		t.Errorf("re-registered index: went to %q", g.route)
	}
}

func TestMuxDuplicatePanics(t *testing.T) {
	mx := connector.NewMux()
	h := connector.HandlerFunc(func(connector.Request) {})
	mx.Handle(idA, h)
	mx.HandleIndex(1, h)
	for name, f := range map[string]func(){
		"exact":       func() { mx.Handle(idA, h) },
		"index":       func() { mx.HandleIndex(1, h) },
		"nil handler": func() { mx.Handle(idB, nil) },
		"nil func":    func() { mx.HandleFunc(idB, nil) },
		"nil index":   func() { mx.HandleIndex(2, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	// A removed id can be registered again.
	r := mx.Handle(idB, h)
	r.Remove()
	mx.Handle(idB, h)
}

// TestMuxManyRoutes registers and removes many routes.
func TestMuxManyRoutes(t *testing.T) {
	k := newKernel()
	srv, peer := dialT(t, k), dialT(t, k)
	ch := make(chan got, 64)
	mx := connector.NewMux()
	const n = 20
	routes := make([]*connector.Route, n)
	for i := range n {
		routes[i] = mx.Handle(connector.CBID{Idx: 0x300, Val: uint32(i)}, recorder(fmt.Sprint(i), ch))
	}
	serveT(t, mx, srv, nil)
	for i := range n {
		if err := peer.SendTo(srv.PortID(), connector.Message{ID: connector.CBID{Idx: 0x300, Val: uint32(i)}}); err != nil {
			t.Fatal(err)
		}
		if g := recv(t, ch); g.route != fmt.Sprint(i) {
			t.Fatalf("val %d went to route %s", i, g.route)
		}
	}
	for _, r := range routes[2:] {
		r.Remove()
	}
	mx.NotFound(recorder("nf", ch))
	for i, want := range []string{"0", "1", "nf"} {
		if err := peer.SendTo(srv.PortID(), connector.Message{ID: connector.CBID{Idx: 0x300, Val: uint32(i)}}); err != nil {
			t.Fatal(err)
		}
		if g := recv(t, ch); g.route != want {
			t.Errorf("val %d went to %s, want %s", i, g.route, want)
		}
	}
}

func TestServeSurvives(t *testing.T) {
	k := newKernel()
	srv, err := k.Dial(&connector.Config{MessageBufferSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	peer := dialT(t, k)
	ch := make(chan got, 16)
	errs := make(chan error, 16)
	mx := connector.NewMux()
	mx.HandleFunc(idA, func(r connector.Request) {
		if string(r.Msg.Data) == "panic" {
			panic("boom")
		}
		recorder("A", ch)(r)
	})
	serveT(t, mx, srv, &connector.ServeOptions{OnError: func(err error) { errs <- err }})
	nextErr := func() error {
		t.Helper()
		select {
		case err := <-errs:
			return err
		case <-time.After(testTimeout):
			t.Fatal("no error reported")
			return nil
		}
	}
	sendA := func(body string) {
		t.Helper()
		if err := peer.SendTo(srv.PortID(), connector.Message{ID: idA, Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}

	sendA("panic")
	err = nextErr()
	var pe *connector.PanicError
	if !errors.Is(err, connector.ErrHandlerPanic) || !errors.As(err, &pe) || pe.Value != "boom" || pe.ID != idA || len(pe.Stack) == 0 {
		t.Errorf("panic reported as %v (%#v)", err, pe)
	}
	sendA("after panic")
	if g := recv(t, ch); string(g.m.Data) != "after panic" {
		t.Errorf("got %q", g.m.Data)
	}

	if err := k.Overrun(srv.PortID()); err != nil {
		t.Fatal(err)
	}
	// The overrun is reported when Serve next reads, which this message
	// wakes.
	sendA("after overrun")
	if err := nextErr(); !errors.Is(err, connector.ErrOverrun) {
		t.Errorf("overrun reported as %v", err)
	}
	if g := recv(t, ch); string(g.m.Data) != "after overrun" {
		t.Errorf("got %q", g.m.Data)
	}

	if err := k.InjectRaw(srv.PortID(), connector.Sender{Port: peer.PortID()}, []byte{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	if err := nextErr(); !errors.Is(err, connector.ErrMalformed) {
		t.Errorf("malformed datagram reported as %v", err)
	}
	if err := peer.SendTo(srv.PortID(), connector.Message{ID: idA, Data: make([]byte, 1000)}); err != nil {
		t.Fatal(err)
	}
	if err := nextErr(); !errors.Is(err, connector.ErrTruncated) {
		t.Errorf("large datagram reported as %v", err)
	}
	sendA("still serving")
	if g := recv(t, ch); string(g.m.Data) != "still serving" {
		t.Errorf("got %q", g.m.Data)
	}
	if st := mx.Stats(); st.Panics != 1 || st.Errors != 3 {
		t.Errorf("stats %+v, want 1 panic and 3 errors", st)
	}
}

func TestServeStops(t *testing.T) {
	t.Run("cancel", func(t *testing.T) {
		k := newKernel()
		c := dialT(t, k)
		mx := connector.NewMux()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mx.Serve(ctx, c, nil) }()
		if !k.WaitReceiving(c.PortID(), testTimeout) {
			t.Fatal("Serve never waited for a message")
		}
		cancel()
		awaitErr(t, done, testTimeout, context.Canceled, "Serve ended by cancel")
		// The Conn is usable afterwards: no read deadline is left behind.
		peer := dialT(t, k)
		if err := peer.SendTo(c.PortID(), connector.Message{ID: idA}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Receive(); err != nil {
			t.Errorf("Receive after Serve: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		k := newKernel()
		c, err := k.Dial(nil)
		if err != nil {
			t.Fatal(err)
		}
		mx := connector.NewMux()
		done := make(chan error, 1)
		go func() { done <- mx.Serve(context.Background(), c, nil) }()
		if !k.WaitReceiving(c.PortID(), testTimeout) {
			t.Fatal("Serve never waited for a message")
		}
		c.Close()
		awaitErr(t, done, testTimeout, connector.ErrClosed, "Serve ended by Close")
	})
	t.Run("second serve", func(t *testing.T) {
		k := newKernel()
		c := dialT(t, k)
		mx := connector.NewMux()
		serveT(t, mx, c, nil)
		if !k.WaitReceiving(c.PortID(), testTimeout) {
			t.Fatal("Serve never waited")
		}
		err := connector.NewMux().Serve(context.Background(), c, nil)
		if err == nil {
			t.Fatal("a second Serve on one Conn started")
		}
	})
	t.Run("drains what was read", func(t *testing.T) {
		// Messages already read from the socket in one batch are still
		// dispatched when the context ends during a handler.
		k := newKernel()
		c, peer := dialT(t, k), dialT(t, k)
		for i := range 5 {
			if err := peer.SendTo(c.PortID(), connector.Message{ID: idA, Seq: uint32(i)}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var seen []uint32
		mx := connector.NewMux()
		mx.HandleFunc(idA, func(r connector.Request) {
			seen = append(seen, r.Msg.Seq)
			cancel()
		})
		if err := mx.Serve(ctx, c, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
		if len(seen) != 5 || k.Queued(c.PortID()) != 0 {
			t.Errorf("dispatched seqs %v with %d left queued, want all 5 read in one batch dispatched", seen, k.Queued(c.PortID()))
		}
	})
	t.Run("counts what Close left unread", func(t *testing.T) {
		// Messages already read in one batch are not dispatched after
		// Close, but counted in Stats.Unread by the time Serve returns.
		k := newKernel()
		c, peer := dialT(t, k), dialT(t, k)
		for i := range 5 {
			if err := peer.SendTo(c.PortID(), connector.Message{ID: idA, Seq: uint32(i)}); err != nil {
				t.Fatal(err)
			}
		}
		var seen []uint32
		mx := connector.NewMux()
		mx.HandleFunc(idA, func(r connector.Request) {
			seen = append(seen, r.Msg.Seq)
			_ = c.Close()
		})
		if err := mx.Serve(context.Background(), c, nil); !errors.Is(err, connector.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
		st := c.Stats()
		if len(seen) != 1 || st.Datagrams != 5 || st.Messages != 1 || st.Unread != 4 {
			t.Errorf("dispatched seqs %v, Stats %+v; want seq 0 dispatched, 5 datagrams, 1 message, 4 unread", seen, st)
		}
	})
}

func TestRequestReply(t *testing.T) {
	k := newKernel()
	srv, cli := dialT(t, k), dialT(t, k)
	mx := connector.NewMux()
	mx.HandleFunc(idA, func(r connector.Request) {
		out := append([]byte("re:"), r.Msg.Data...)
		if err := r.Reply(connector.Message{ID: r.Msg.ID, Seq: r.Msg.Seq, Ack: r.Msg.Seq + 1, Data: out}); err != nil {
			t.Errorf("reply: %v", err)
		}
	})
	serveT(t, mx, srv, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m, from, err := connector.Call(ctx, cli, connector.Message{ID: idA, Seq: 41, Data: []byte("hi")}, connector.ToPort(srv.PortID()), connector.MatchSeqAck)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "re:hi" || m.Seq != 41 || m.Ack != 42 || from.Port != srv.PortID() {
		t.Errorf("reply %+v from %v", m, from)
	}
	if r := (connector.Request{}).Reply(connector.Message{}); r == nil {
		t.Error("Reply on a zero Request succeeded")
	}
}

// TestServeFlush checks that Conn.Flush, which wakes every receive, neither
// ends Serve nor a waiting call.
func TestServeFlush(t *testing.T) {
	k := newKernel()
	c, peer := dialT(t, k), dialT(t, k)
	ch := make(chan got, 4)
	mx := connector.NewMux()
	mx.Handle(idA, recorder("A", ch))
	_, done := serveT(t, mx, c, nil)
	if !k.WaitReceiving(c.PortID(), testTimeout) {
		t.Fatal("Serve never read")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := peer.SendTo(c.PortID(), connector.Message{ID: idA, Data: []byte("after flush")}); err != nil {
		t.Fatal(err)
	}
	if g := recv(t, ch); string(g.m.Data) != "after flush" {
		t.Errorf("got %q", g.m.Data)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v after Flush", err)
	default:
	}

	// A call reading the Conn itself.
	c2, srv := dialT(t, k), dialT(t, k)
	res := make(chan error, 1)
	go func() {
		_, _, err := connector.Call(ctxT(t), c2, connector.Message{ID: idA, Seq: 8}, connector.ToPort(srv.PortID()), connector.MatchSeqAck)
		res <- err
	}()
	if _, _, err := srv.Receive(); err != nil {
		t.Fatal(err)
	}
	if !k.WaitReceiving(c2.PortID(), testTimeout) {
		t.Fatal("the call never read")
	}
	if err := c2.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := srv.SendTo(c2.PortID(), connector.Message{ID: idA, Seq: 8, Ack: 9}); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Errorf("call after Flush: %v", err)
	}
}

// TestServeKernelIDs checks that a userspace port cannot pose as a kernel
// agent by unicast: its messages with a kernel id are dropped and counted,
// unless the Conn accepts every sender.
func TestServeKernelIDs(t *testing.T) {
	for _, policy := range []connector.SenderPolicy{connector.SendersDefault, connector.SendersAny} {
		t.Run(policy.String(), func(t *testing.T) {
			k := newKernel()
			c, err := k.Dial(&connector.Config{Senders: policy})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			peer := dialT(t, k)
			ch := make(chan got, 4)
			mx := connector.NewMux()
			mx.Handle(connector.IDDM, recorder("dm", ch))
			mx.Handle(idA, recorder("A", ch))
			serveT(t, mx, c, nil)
			for _, id := range []connector.CBID{connector.IDDM, idA} {
				if err := peer.SendTo(c.PortID(), connector.Message{ID: id, Data: []byte(id.String())}); err != nil {
					t.Fatal(err)
				}
			}
			if err := k.Unicast(c.PortID(), connector.Message{ID: connector.IDDM, Data: []byte("kernel")}); err != nil {
				t.Fatal(err)
			}
			var routes []string
			for range 2 {
				routes = append(routes, recv(t, ch).route)
			}
			want, foreign := "A dm", uint64(1)
			if policy == connector.SendersAny {
				routes = append(routes, recv(t, ch).route)
				want, foreign = "dm A dm", 0
			}
			if got := join(routes); got != want || mx.Stats().Foreign != foreign {
				t.Errorf("dispatched to %q with %d foreign, want %q and %d", got, mx.Stats().Foreign, want, foreign)
			}
		})
	}
}
