//go:build linux

package connector_test

// Mux, Call and Agents against the real kernel: the process events
// connector as a real agent, and a second userspace socket as a peer, by
// unicast and by multicast on groups above the kernel's range.

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

const groupMuxServe connector.Group = 29

func ctxWait(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// dialServe opens a Conn for Serve or Call: without the read deadline that
// dial sets, which they manage themselves.
func dialServe(t *testing.T, cfg *connector.Config) *connector.Conn {
	t.Helper()
	c := dial(t, cfg)
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIntegrationMuxPeer serves requests on one socket and calls it from
// another, by unicast to its port and by multicast on its group, several
// calls at once.
func TestIntegrationMuxPeer(t *testing.T) {
	requirePrivileged(t)
	id := testID()
	srv := dialServe(t, &connector.Config{Groups: []connector.Group{groupMuxServe}})
	cli := dialServe(t, nil)
	mx := connector.NewMux()
	var mu sync.Mutex
	senders := map[connector.Sender]int{}
	mx.HandleFunc(id, func(r connector.Request) {
		mu.Lock()
		senders[r.From]++
		mu.Unlock()
		out := append([]byte("re:"), r.Msg.Data...)
		if err := r.Reply(connector.Message{ID: id, Seq: r.Msg.Seq, Ack: r.Msg.Seq + 1, Data: out}); err != nil {
			t.Errorf("reply: %v", err)
		}
	})
	serveT(t, mx, srv, nil)

	for _, to := range []connector.Destination{connector.ToPort(srv.PortID()), connector.ToGroup(groupMuxServe)} {
		t.Run(to.String(), func(t *testing.T) {
			const n = 8
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					seq := rand.Uint32()
					body := []byte{byte(i), 'x'}
					m, from, err := connector.Call(ctxWait(t), cli, connector.Message{ID: id, Seq: seq, Data: body}, to, connector.MatchSeqAck)
					if err != nil {
						t.Errorf("call %d to %v: %v", i, to, err)
						return
					}
					if string(m.Data) != "re:"+string(body) || m.Seq != seq || from != (connector.Sender{Port: srv.PortID()}) {
						t.Errorf("call %d to %v: reply %+v from %v", i, to, m, from)
					}
				})
			}
			wg.Wait()
		})
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[connector.Sender]int{{Port: cli.PortID()}: 8, {Port: cli.PortID(), Group: groupMuxServe}: 8}
	if len(senders) != 2 || senders[connector.Sender{Port: cli.PortID()}] != 8 || senders[connector.Sender{Port: cli.PortID(), Group: groupMuxServe}] != 8 {
		t.Errorf("the server saw senders %v, want %v", senders, want)
	}
}

// TestIntegrationCallProc subscribes to process events through Call, the
// kernel's cn_proc being the agent, with and without a Serve on the same
// Conn; under Serve, the events still reach the handler.
func TestIntegrationCallProc(t *testing.T) {
	requirePrivileged(t)
	testutil.RequireProcEvents(t)
	for _, serve := range []bool{false, true} {
		name := "alone"
		if serve {
			name = "under Serve"
		}
		t.Run(name, func(t *testing.T) {
			c := dialServe(t, &connector.Config{Groups: []connector.Group{connector.IDProc.Group()}, ReadBufferSize: 4 << 20})
			events := make(chan struct{}, 1)
			if serve {
				mx := connector.NewMux()
				mx.HandleFunc(connector.IDProc, func(r connector.Request) {
					select {
					case events <- struct{}{}:
					default:
					}
				})
				// Until Serve reads, the call would read c itself; both
				// work, but this subtest is about Serve.
				serveStarted(t, mx, c)
			}
			callProcListen(t, c)
			if serve {
				// Make events of our own and wait for the handler; an
				// overrun may drop them, so spawn again every second.
				timeout := time.After(waitTimeout)
				for got := false; !got; {
					spawnAndWait(t)
					select {
					case <-events:
						got = true
					case <-time.After(time.Second):
					case <-timeout:
						t.Fatal("no process event reached the handler")
					}
				}
			}
		})
	}
}

// callProcListen subscribes c to process events through Call (with opts),
// waiting for the kernel's acknowledgement with MatchAckPlusOne, and checks
// that it is the proc connector's ack to the request, without an error. It
// survives receive overruns (testutil.ProcListenAck) and sends IGNORE when
// the test ends.
func callProcListen(t *testing.T, c *connector.Conn, opts ...connector.CallOption) {
	t.Helper()
	testutil.ProcListenAck(t, testutil.ProcListen{
		Try: func(ctx context.Context, p testutil.ProcTry) (bool, error) {
			m, from, err := connector.Call(ctx, c, procOp(procListen, p.Ack), connector.Destination{}, connector.MatchAckPlusOne, opts...)
			if err != nil {
				return !errors.Is(err, connector.ErrNoAgent), err
			}
			if !isProcAck(m, from, p.Ack) {
				t.Fatalf("reply %+v from %v is not the proc ack to %#x", m, from, p.Ack)
			}
			if e := binary.NativeEndian.Uint32(m.Data[16:20]); e != 0 {
				t.Fatalf("the kernel refused LISTEN: err %d", e)
			}
			return true, nil
		},
		Overruns: func() uint64 { return c.Stats().Overruns },
		Ignore:   func() error { return c.Send(procOp(procIgnore, rand.Uint32())) },
	})
}

// spawnAndWait makes the kernel emit process events: it runs the test
// binary itself, running no test, and waits for it to exit.
func spawnAndWait(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(os.Args[0], "-test.run=^$").CombinedOutput(); err != nil {
		t.Fatalf("running %s: %v\n%s", os.Args[0], err, out)
	}
}

func TestIntegrationAgents(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	testutil.RequireProcEvents(t)
	agents, err := connector.Agents()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(agents, connector.Agent{Name: "cn_proc", ID: connector.IDProc}) {
		t.Errorf("Agents() = %v, want cn_proc 1:1 among them", agents)
	}
	c := dialServe(t, nil)
	own, err := c.Agents()
	if err != nil || !slices.Equal(own, agents) {
		t.Errorf("Conn.Agents() = %v, %v; want %v", own, err, agents)
	}
	// An id that nothing registered: Call fails at once, without sending.
	id := testID()
	for slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == id }) {
		id = testID()
	}
	start := time.Now()
	_, _, err = connector.Call(ctxWait(t), c, connector.Message{ID: id, Seq: 1}, connector.Destination{}, connector.MatchSeqAck)
	if !errors.Is(err, connector.ErrNoAgent) {
		t.Fatalf("Call to %v: %v, want ErrNoAgent", id, err)
	}
	if d := time.Since(start); d > promptly {
		t.Errorf("ErrNoAgent took %v", d)
	}
}

// TestAllocsMuxServe guards the dispatch path on real sockets: in steady
// state, Serve allocates nothing per message, also with a call waiting.
func TestAllocsMuxServe(t *testing.T) {
	requirePrivileged(t)
	rx := dialServe(t, &connector.Config{ReadBufferSize: 8 << 20})
	tx := dial(t, nil)
	data := make([]byte, 40)
	for _, withCall := range []bool{false, true} {
		a := serveAllocs(t, rx, func(seq uint32) error {
			return tx.SendTo(rx.PortID(), connector.Message{ID: connector.CBID{Idx: 0x4242, Val: 1}, Seq: seq, Data: data})
		}, withCall)
		if a != 0 {
			t.Errorf("Mux.Serve (waiting call: %v) allocates %.2f times per dispatched message, want 0", withCall, a)
		}
	}
}

// TestIntegrationServeOverrun overruns a served socket for real: while a
// handler holds Serve, a peer floods the group past the receive buffer.
// Serve reports the overrun through OnError and goes on: what was queued is
// dispatched, and a message sent once the queue is drained arrives.
func TestIntegrationServeOverrun(t *testing.T) {
	requirePrivileged(t)
	rx := dialServe(t, nil)
	// A group no other socket has joined: the counts below are exact.
	groupMuxOverrun := testutil.JoinQuietGroup(t, rx)
	if err := rx.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	tx := dial(t, nil)
	id := testID()
	hold, held := make(chan struct{}), make(chan struct{})
	var seen []uint32 // written by the handler, read after done
	done := make(chan struct{})
	mx := connector.NewMux()
	mx.HandleFunc(id, func(r connector.Request) {
		if len(seen) == 0 {
			close(held)
			<-hold
		}
		seen = append(seen, r.Msg.Seq)
		if r.Msg.Seq == 1<<31 {
			close(done)
		}
	})
	overruns := make(chan error, 4)
	serveT(t, mx, rx, &connector.ServeOptions{OnError: func(err error) {
		select {
		case overruns <- err:
		default: // a handler must never block Serve
		}
	}})
	send := func(seq uint32) {
		t.Helper()
		if err := tx.Multicast(groupMuxOverrun, connector.Message{ID: id, Seq: seq, Data: payload(64, 1)}); err != nil {
			t.Fatalf("multicast %d: %v", seq, err)
		}
	}
	// Should a sender that has not joined the group overrun rx anyway, the
	// kernel drops everything until Serve has read the queue empty: send
	// the first message again until the handler has it, instead of
	// waiting for it for ever.
	sent0 := 0
	giveUp := time.After(waitTimeout)
	for got := false; !got; {
		send(0)
		sent0++
		select {
		case <-held:
			got = true
		case <-time.After(200 * time.Millisecond):
		case <-giveUp:
			t.Fatalf("the handler never got the first message (%d sent)", sent0)
		}
	}
	const flood = 256
	for i := range flood {
		send(uint32(i + 1))
	}
	close(hold)
	select {
	case err := <-overruns:
		if !errors.Is(err, connector.ErrOverrun) {
			t.Fatalf("OnError got %v, want ErrOverrun", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no overrun reported")
	}
	// Serve drains the queue; until it is empty the kernel keeps dropping.
	deadline := time.Now().Add(waitTimeout)
	for !queueEmpty(t, rx) {
		if time.Now().After(deadline) {
			t.Fatal("Serve did not drain the queue")
		}
		time.Sleep(time.Millisecond)
	}
	send(1 << 31)
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("the message after the overrun never reached the handler")
	}
	// Every message sent was dispatched or dropped by the kernel, which
	// counts each one it drops (sk_drops): none vanished in between, and
	// on a quiet group nothing else was dropped.
	drops, err := rx.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if n, sent := uint64(len(seen)), uint64(flood+1+sent0); n < 3 || n+drops != sent {
		t.Errorf("dispatched %d messages and the kernel dropped %d, want %d in all (and at least 3 dispatched)", n, drops, sent)
	}
	if st := mx.Stats(); st.Errors < 1 || rx.Stats().Overruns < 1 {
		t.Errorf("Mux stats %+v, Conn stats %+v: the overrun is not counted", st, rx.Stats())
	}
}

// TestIntegrationCloseReleasesCall is the user's report on the real kernel:
// a Call waiting while Serve reads the same Conn, to a peer that never
// answers, ends with ErrClosed when the Conn is closed, as Serve does.
func TestIntegrationCloseReleasesCall(t *testing.T) {
	requirePrivileged(t)
	a, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := dialServe(t, nil)
	serveDone := make(chan error, 1)
	go func() { serveDone <- connector.NewMux().Serve(context.Background(), a, nil) }()
	callDone := make(chan error, 1)
	go func() {
		_, _, err := connector.Call(context.Background(), a, connector.Message{ID: testID(), Seq: 1, Ack: 7}, connector.ToPort(b.PortID()), connector.MatchGenealogy)
		callDone <- err
	}()
	// The request reached the peer: the call is waiting for its reply.
	if err := b.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Receive(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for what, ch := range map[string]chan error{"Serve": serveDone, "Call": callDone} {
		select {
		case err := <-ch:
			if !errors.Is(err, connector.ErrClosed) {
				t.Errorf("%s returned %v, want ErrClosed", what, err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("%s still blocked after Close", what)
		}
	}
}
