package connector_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// procLike is a fake agent that acknowledges as cn_proc does: a multicast on
// group 1 with ack+1 and a seq of its own.
func procLike(k *cntest.Kernel) {
	var mu sync.Mutex
	seq := uint32(1000)
	k.Handle(connector.IDProc, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		mu.Lock()
		seq++
		s := seq
		mu.Unlock()
		return []cntest.Reply{{Group: 1, Message: connector.Message{ID: connector.IDProc, Seq: s, Ack: req.Ack + 1, Data: req.Data}}}
	})
}

func TestCallKernelAgent(t *testing.T) {
	k := newKernel()
	procLike(k)
	c := dialT(t, k, 1)
	other := dialT(t, k, 1) // sees every ack too
	req := connector.Message{ID: connector.IDProc, Seq: 5, Ack: 0x1234, Data: []byte{1, 0, 0, 0}}
	m, from, err := connector.Call(ctxT(t), c, req, connector.Destination{}, connector.MatchAckPlusOne)
	if err != nil {
		t.Fatal(err)
	}
	if m.Ack != 0x1235 || m.Seq != 1001 || from != (connector.Sender{Group: 1}) || string(m.Data) != string(req.Data) {
		t.Errorf("reply %+v from %v", m, from)
	}
	// Nothing of the exchange is left queued on the caller's socket.
	if n := k.Queued(c.PortID()); n != 0 {
		t.Errorf("%d datagrams left queued", n)
	}
	_ = other
}

func TestCallNoAgent(t *testing.T) {
	k := newKernel()
	procLike(k)
	c := dialT(t, k)
	agents, err := c.Agents()
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 || agents[0].ID != connector.IDProc || agents[0].Name != "cntest" {
		t.Errorf("Agents() = %v, want the one fake proc agent", agents)
	}
	start := time.Now()
	_, _, err = connector.Call(ctxT(t), c, connector.Message{ID: connector.IDW1, Seq: 1}, connector.Destination{}, connector.MatchSeqAck)
	if !errors.Is(err, connector.ErrNoAgent) {
		t.Fatalf("Call to an id without agent: %v, want ErrNoAgent", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ErrNoAgent took %v", d)
	}
	if len(k.Requests()) != 0 {
		t.Errorf("the request was sent: %v", k.Requests())
	}
	// Registering the agent makes the same call work.
	k.Handle(connector.IDW1, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		return []cntest.Reply{{Message: connector.Message{ID: req.ID, Seq: req.Seq, Ack: req.Seq + 1}}}
	})
	if _, _, err := connector.Call(ctxT(t), c, connector.Message{ID: connector.IDW1, Seq: 1}, connector.Destination{}, connector.MatchSeqAck); err != nil {
		t.Errorf("Call after Handle: %v", err)
	}
}

func TestCallTimeout(t *testing.T) {
	k := newKernel()
	c, silent := dialT(t, k), dialT(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := connector.Call(ctx, c, connector.Message{ID: idA, Seq: 1}, connector.ToPort(silent.PortID()), connector.MatchSeqAck)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered Call: %v, want context.DeadlineExceeded", err)
	}
	// The Conn works normally afterwards (no read deadline left set).
	if err := silent.SendTo(c.PortID(), connector.Message{ID: idB}); err != nil {
		t.Fatal(err)
	}
	if msgs, _, err := c.Receive(); err != nil || len(msgs) != 1 || msgs[0].ID != idB {
		t.Errorf("Receive after Call: %v %v", msgs, err)
	}
	// Bad arguments.
	for name, f := range map[string]func() error{
		"nil conn": func() error {
			_, _, err := connector.Call(ctxT(t), nil, connector.Message{}, connector.Destination{}, connector.MatchSeq)
			return err
		},
		"nil match": func() error {
			_, _, err := connector.Call(ctxT(t), c, connector.Message{}, connector.Destination{}, nil)
			return err
		},
		"port and group": func() error {
			_, _, err := connector.Call(ctxT(t), c, connector.Message{}, connector.Destination{Port: 5, Group: 20}, connector.MatchSeq)
			return err
		},
		"bad group": func() error {
			_, _, err := connector.Call(ctxT(t), c, connector.Message{}, connector.ToGroup(40), connector.MatchSeq)
			return err
		},
	} {
		if f() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestCallWrongSender checks that a reply from a port the request did not
// go to is not taken, even if it matches.
func TestCallWrongSender(t *testing.T) {
	k := newKernel()
	c, srv, intruder := dialT(t, k), dialT(t, k), dialT(t, k)
	done := make(chan error, 1)
	req := connector.Message{ID: idA, Seq: 77}
	go func() {
		_, from, err := connector.Call(ctxT(t), c, req, connector.ToPort(srv.PortID()), connector.MatchSeqAck)
		if err == nil && from.Port != srv.PortID() {
			err = errors.New("reply taken from the wrong port")
		}
		done <- err
	}()
	// Wait for the request, then answer from the intruder first.
	msgs, _, err := srv.Receive()
	if err != nil || len(msgs) != 1 {
		t.Fatal(msgs, err)
	}
	reply := connector.Message{ID: idA, Seq: 77, Ack: 78}
	if err := intruder.SendTo(c.PortID(), reply); err != nil {
		t.Fatal(err)
	}
	if err := srv.SendTo(c.PortID(), reply); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// TestCallsConcurrent runs many calls at once on one Conn without Serve:
// one of them reads for all, and each gets its own reply.
func TestCallsConcurrent(t *testing.T) {
	testutil.CheckGoroutines(t, testTimeout)
	k := newKernel()
	srv, c := dialT(t, k), dialT(t, k)
	mx := connector.NewMux()
	// The server answers in reverse order of arrival, in batches of 8, so
	// that callers must hand replies to each other.
	var mu sync.Mutex
	var held []connector.Request
	mx.HandleFunc(idA, func(r connector.Request) {
		mu.Lock()
		defer mu.Unlock()
		m := r.Msg
		m.Data = append([]byte(nil), m.Data...)
		held = append(held, connector.Request{Msg: m, From: r.From})
		if len(held) == 8 {
			for i := len(held) - 1; i >= 0; i-- {
				h := held[i]
				if err := srv.SendTo(h.From.Port, connector.Message{ID: idA, Seq: h.Msg.Seq, Ack: h.Msg.Seq + 1, Data: h.Msg.Data}); err != nil {
					t.Error(err)
				}
			}
			held = held[:0]
		}
	})
	serveT(t, mx, srv, nil)
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := connector.Message{ID: idA, Seq: uint32(i), Data: []byte{byte(i)}}
			m, _, err := connector.Call(ctxT(t), c, req, connector.ToPort(srv.PortID()), connector.MatchSeqAck)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			if m.Seq != uint32(i) || len(m.Data) != 1 || m.Data[0] != byte(i) {
				t.Errorf("call %d got %+v", i, m)
			}
		})
	}
	wg.Wait()
}

// TestCallWhileServing checks that replies go to the waiting callers, not to
// the handlers, while Serve runs on the same Conn, and that other messages
// still reach the handlers.
func TestCallWhileServing(t *testing.T) {
	k := newKernel()
	c, srv := dialT(t, k), dialT(t, k)
	ch := make(chan got, 64)
	mx := connector.NewMux()
	mx.Handle(idA, recorder("A", ch))
	// Until Serve reads c, a waiting call would read it itself.
	serveStarted(t, mx, c)

	srvMux := connector.NewMux()
	srvMux.HandleFunc(idA, func(r connector.Request) {
		// An unrelated message first, then the reply.
		if err := r.Reply(connector.Message{ID: idA, Seq: 999999, Data: []byte("note")}); err != nil {
			t.Error(err)
		}
		if err := r.Reply(connector.Message{ID: idA, Seq: r.Msg.Seq, Ack: r.Msg.Seq + 1}); err != nil {
			t.Error(err)
		}
	})
	serveT(t, srvMux, srv, nil)

	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA, Seq: uint32(i)}, connector.ToPort(srv.PortID()), connector.MatchSeqAck); err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for range n {
		if g := recv(t, ch); string(g.m.Data) != "note" {
			t.Errorf("handler got %+v, want only the notes", g.m)
		}
	}
	if st := mx.Stats(); st.Claimed != n || st.Dispatched != n {
		t.Errorf("stats %+v, want %d claimed and %d dispatched", st, n, n)
	}
}

// TestServeTakesOverFromCall starts Serve while a Call is reading the Conn
// itself: the reply that arrives afterwards still reaches the call, and
// other messages reach the handlers.
func TestServeTakesOverFromCall(t *testing.T) {
	k := newKernel()
	c, srv := dialT(t, k), dialT(t, k)
	done := make(chan error, 1)
	go func() {
		_, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA, Seq: 3}, connector.ToPort(srv.PortID()), connector.MatchSeqAck)
		done <- err
	}()
	if _, _, err := srv.Receive(); err != nil {
		t.Fatal(err)
	}
	if !k.WaitReceiving(c.PortID(), testTimeout) {
		t.Fatal("the call never read")
	}
	ch := make(chan got, 4)
	mx := connector.NewMux()
	mx.Handle(idA, recorder("A", ch))
	// OnStart runs once the call has stopped reading and Serve has taken
	// over: the next message goes to the handler.
	serveStarted(t, mx, c)
	if err := srv.SendTo(c.PortID(), connector.Message{ID: idA, Seq: 50, Data: []byte("other")}); err != nil {
		t.Fatal(err)
	}
	if g := recv(t, ch); string(g.m.Data) != "other" {
		t.Errorf("handler got %+v", g.m)
	}
	if n := c.Stats().Unclaimed; n != 0 {
		t.Errorf("%d messages unclaimed", n)
	}
	if err := srv.SendTo(c.PortID(), connector.Message{ID: idA, Seq: 3, Ack: 4}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the call never got its reply")
	}
}

func TestCallInHandler(t *testing.T) {
	testutil.CheckGoroutines(t, testTimeout)
	k := newKernel()
	procLike(k)
	c, peer := dialT(t, k, 1), dialT(t, k)
	errs := make(chan error, 2)
	mx := connector.NewMux()
	req := connector.Message{ID: connector.IDProc, Ack: 7, Data: []byte{1, 0, 0, 0}}
	mx.HandleFunc(idA, func(r connector.Request) {
		_, _, err := connector.Call(context.Background(), r.Conn(), req, connector.Destination{}, connector.MatchAckPlusOne)
		errs <- err
	})
	// The same call through a Queue runs on another goroutine and works.
	q := mustQueue(t)(connector.NewQueue(connector.HandlerFunc(func(r connector.Request) {
		_, _, err := connector.Call(ctxT(t), r.Conn(), req, connector.Destination{}, connector.MatchAckPlusOne)
		errs <- err
	}), 4, nil))
	defer q.Close()
	mx.Handle(idB, q)
	serveT(t, mx, c, nil)
	if err := peer.SendTo(c.PortID(), connector.Message{ID: idA}); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, connector.ErrCallInHandler) {
		t.Errorf("Call in a handler: %v, want ErrCallInHandler", err)
	}
	if err := peer.SendTo(c.PortID(), connector.Message{ID: idB}); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Errorf("Call in a queued handler: %v", err)
	}
}

// TestExchangeW1Like runs a w1-style exchange: data records with
// ack = seq+1, then one status record per command with the request's ack,
// preceded by the stray empty 0:0 message w1 sends for a lone command.
func TestExchangeW1Like(t *testing.T) {
	k := newKernel()
	k.Handle(connector.IDW1, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		r := func(ack uint32, data string) cntest.Reply {
			return cntest.Reply{Message: connector.Message{ID: req.ID, Seq: req.Seq, Ack: ack, Data: []byte(data)}}
		}
		return []cntest.Reply{
			{Message: connector.Message{}}, // the stray 0:0
			r(req.Seq+1, "data1"), r(req.Ack, "status1"),
			r(req.Seq+1, "data2"), r(req.Ack, "status2"),
		}
	})
	c := dialT(t, k)
	req := connector.Message{ID: connector.IDW1, Seq: 10, Ack: 5000}
	var got []string
	statuses := 0
	err := connector.Exchange(ctxT(t), c, req, connector.Destination{}, connector.MatchSeq, func(m connector.Message, _ connector.Sender) bool {
		got = append(got, string(m.Data))
		if m.Ack == req.Ack {
			statuses++
		}
		return statuses < 2
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "data1 status1 data2 status2"; join(got) != want {
		t.Errorf("exchange got %q, want %q", join(got), want)
	}
}

// TestCallPayloadSeq matches on a sequence number inside the payload, as
// dm-log-userspace does.
func TestCallPayloadSeq(t *testing.T) {
	k := newKernel()
	c, srv := dialT(t, k), dialT(t, k)
	payloadSeq := func(m connector.Message) (uint64, bool) {
		if len(m.Data) < 8 {
			return 0, false
		}
		return binary.LittleEndian.Uint64(m.Data), true
	}
	match := func(req, reply connector.Message, _ connector.Sender) bool {
		a, ok1 := payloadSeq(req)
		b, ok2 := payloadSeq(reply)
		return ok1 && ok2 && a == b && reply.ID == req.ID
	}
	go func() {
		for range 2 {
			msgs, from, err := srv.Receive()
			if err != nil {
				return
			}
			r := msgs[0]
			// A short message first: the matcher must not fail on it.
			_ = srv.SendTo(from.Port, connector.Message{ID: r.ID, Data: []byte{1}})
			_ = srv.SendTo(from.Port, connector.Message{ID: r.ID, Data: append(r.Data[:8:8], "ok"...)})
		}
	}()
	for _, seq := range []uint64{1 << 40, 3} {
		data := binary.LittleEndian.AppendUint64(nil, seq)
		m, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idC, Data: data}, connector.ToPort(srv.PortID()), match)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := payloadSeq(m); s != seq || string(m.Data[8:]) != "ok" {
			t.Errorf("reply %x for seq %d", m.Data, seq)
		}
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

func TestQueue(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []uint32
	started := make(chan struct{}, 1)
	q := mustQueue(t)(connector.NewQueue(connector.HandlerFunc(func(r connector.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		mu.Lock()
		seen = append(seen, r.Msg.Seq)
		mu.Unlock()
		if r.Msg.Seq == 2 {
			panic("queued panic")
		}
	}), 3, nil))
	buf := []byte("reused")
	q.ServeConnector(connector.Request{Msg: connector.Message{Seq: 0, Data: buf}})
	<-started // the handler holds message 0 and its slot
	for i := uint32(1); i < 6; i++ {
		copy(buf, "XXXXXX") // the Queue must have copied
		q.ServeConnector(connector.Request{Msg: connector.Message{Seq: i, Data: buf}})
	}
	// Slots: 0 is being handled, 1 and 2 are queued, 3, 4 and 5 dropped.
	if d := q.Dropped(); d != 3 {
		t.Errorf("dropped %d, want 3", d)
	}
	close(release)
	q.Close()
	q.Close()
	if want := []uint32{0, 1, 2}; len(seen) != 3 || seen[0] != 0 || seen[1] != 1 || seen[2] != 2 {
		t.Errorf("handled %v, want %v", seen, want)
	}
	if q.Panics() != 1 {
		t.Errorf("panics %d, want 1", q.Panics())
	}
	q.ServeConnector(connector.Request{})
	if q.Dropped() != 4 {
		t.Errorf("a message after Close was not counted as dropped")
	}
}

// TestQueueReports checks that a Queue reports each drop and each panic
// through its onError, with errors that match the sentinels.
func TestQueueReports(t *testing.T) {
	var mu sync.Mutex
	var errs []error
	release := make(chan struct{})
	q := mustQueue(t)(connector.NewQueue(connector.HandlerFunc(func(r connector.Request) {
		<-release
		panic("queued")
	}), 1, func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}))
	// With depth 1, the first message takes the slot; the handler holds
	// it, so the second is dropped.
	q.ServeConnector(connector.Request{Msg: connector.Message{ID: idA}})
	q.ServeConnector(connector.Request{Msg: connector.Message{ID: idB}})
	close(release)
	q.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 2 || !errors.Is(errs[0], connector.ErrQueueFull) || !errors.Is(errs[1], connector.ErrHandlerPanic) {
		t.Fatalf("reported %v, want a drop then a panic", errs)
	}
	var pe *connector.PanicError
	if !errors.As(errs[1], &pe) || pe.ID != idA || pe.Value != "queued" {
		t.Errorf("panic reported as %#v", pe)
	}
}

// TestCallUnmatched checks that a call reading the Conn itself hands what
// it does not claim to the WithUnmatched handler, in order, and that the
// reply still reaches the call.
func TestCallUnmatched(t *testing.T) {
	k := newKernel()
	k.Handle(connector.IDProc, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		// Events multicast before the acknowledgement, as cn_proc may.
		var out []cntest.Reply
		for i := range 3 {
			out = append(out, cntest.Reply{Group: 1, Message: connector.Message{ID: connector.IDProc, Seq: uint32(i), Data: []byte{byte(i)}}})
		}
		return append(out, cntest.Reply{Group: 1, Message: connector.Message{ID: connector.IDProc, Seq: 99, Ack: req.Ack + 1}})
	})
	c := dialT(t, k, 1)
	var seen []uint32
	keep := connector.HandlerFunc(func(r connector.Request) { seen = append(seen, r.Msg.Seq) })
	m, _, err := connector.Call(ctxT(t), c, connector.Message{ID: connector.IDProc, Ack: 41}, connector.Destination{}, connector.MatchAckPlusOne, connector.WithUnmatched(keep))
	if err != nil || m.Seq != 99 {
		t.Fatalf("Call: %+v, %v", m, err)
	}
	if len(seen) != 3 || seen[0] != 0 || seen[1] != 1 || seen[2] != 2 {
		t.Errorf("unmatched handler saw seqs %v, want 0 1 2", seen)
	}
}

// TestCloseReleasesCalls checks Exchange's contract, "until ctx ends or c
// is closed": Close ends every waiting call with ErrClosed, whoever reads
// the Conn (a Serve, one of the calls, nobody yet), including a call made
// from a Queue's goroutine, and leaves no goroutine behind.
func TestCloseReleasesCalls(t *testing.T) {
	for _, mode := range []string{"serve", "calls", "queue"} {
		t.Run(mode, func(t *testing.T) {
			testutil.CheckGoroutines(t, testTimeout)
			k := newKernel()
			a, err := k.Dial(nil)
			if err != nil {
				t.Fatal(err)
			}
			b := dialT(t, k) // a peer that never answers
			serveDone := make(chan error, 1)
			var q *connector.Queue
			const n = 3
			results := make(chan error, n+1)
			call := func(i int) {
				// No deadline: only Close can end these calls.
				_, _, err := connector.Call(context.Background(), a, connector.Message{ID: idA, Seq: uint32(i)}, connector.ToPort(b.PortID()), connector.MatchGenealogy)
				results <- err
			}
			want := n
			if mode != "calls" {
				mx := connector.NewMux()
				if mode == "queue" {
					q = mustQueue(t)(connector.NewQueue(connector.HandlerFunc(func(connector.Request) { call(n) }), 1, nil))
					mx.Handle(idB, q)
					want++
				}
				go func() { serveDone <- mx.Serve(context.Background(), a, nil) }()
				if !k.WaitReceiving(a.PortID(), testTimeout) {
					t.Fatal("Serve never read")
				}
			}
			for i := range n {
				go call(i)
			}
			if q != nil {
				if err := b.SendTo(a.PortID(), connector.Message{ID: idB}); err != nil {
					t.Fatal(err)
				}
			}
			// Every request has reached the peer: the calls are waiting.
			for range want {
				if _, _, err := b.Receive(); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			for range want {
				select {
				case err := <-results:
					if !errors.Is(err, connector.ErrClosed) {
						t.Errorf("call ended with %v, want ErrClosed", err)
					}
				case <-time.After(testTimeout):
					t.Fatal("Close did not release a waiting call")
				}
			}
			if mode != "calls" {
				if err := <-serveDone; !errors.Is(err, connector.ErrClosed) {
					t.Errorf("Serve returned %v, want ErrClosed", err)
				}
			}
			if q != nil {
				q.Close()
			}
		})
	}
}

// ErrNoAgent's text says what registers a known id (the modules of
// agents.md's table: w1 wire, uvesafb, dm-log-userspace), once for every
// caller.
func TestNoAgentNamesModule(t *testing.T) {
	k := newKernel()
	procLike(k)
	c := dialT(t, k)
	for id, want := range map[connector.CBID]string{
		connector.IDW1:   "module wire",
		connector.IDV86D: "uvesafb module",
		connector.IDDM:   "dm-log-userspace module",
		idA:              "check the id",
	} {
		_, _, err := connector.Call(ctxT(t), c, connector.Message{ID: id, Seq: 1}, connector.Destination{}, connector.MatchSeqAck)
		if !errors.Is(err, connector.ErrNoAgent) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "cntest 1:1") {
			t.Errorf("Call to %v: %v, want ErrNoAgent naming %q and the registered agents", id, err, want)
		}
		checkText(t, "ErrNoAgent", err)
	}
	if err := connector.NoAgentError("x", connector.IDW1, nil); !strings.Contains(err.Error(), "registered: none") {
		t.Errorf("NoAgentError without agents: %v", err)
	}
}

// mustQueue fails t if NewQueue failed.
func mustQueue(t testing.TB) func(*connector.Queue, error) *connector.Queue {
	return func(q *connector.Queue, err error) *connector.Queue {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
}

// NewQueue checks its arguments: a depth outside 1 to MaxQueueDepth or a
// nil handler is an error naming it, never a silent default.
func TestNewQueueRange(t *testing.T) {
	h := connector.HandlerFunc(func(connector.Request) {})
	for _, depth := range []int{0, -1, connector.MaxQueueDepth + 1} {
		if q, err := connector.NewQueue(h, depth, nil); !errors.Is(err, connector.ErrInvalidConfig) || q != nil || !strings.Contains(err.Error(), "depth") {
			t.Errorf("NewQueue(depth %d) = %v, %v; want ErrInvalidConfig naming the depth", depth, q, err)
		}
	}
	if _, err := connector.NewQueue(nil, 1, nil); err == nil {
		t.Error("NewQueue(nil handler) succeeded")
	}
	q, err := connector.NewQueue(h, connector.MaxQueueDepth, nil)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
}
