package connector_test

import (
	"context"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

// muxAllocRuns is how many messages each dispatch guard measures.
const muxAllocRuns = 500

// serveAllocs measures the allocations per message of Mux.Serve
// dispatching what send delivers to rx: send one message, wait until the
// handler has seen it. Sends and the channel hand-off allocate nothing in
// steady state, so the count is the dispatch path's. A waiting Call on the
// Conn (whose reply never comes) makes Serve offer each message to it
// first, as it does in real programs.
func serveAllocs(t *testing.T, rx *connector.Conn, send func(seq uint32) error, withCall bool) float64 {
	t.Helper()
	id := connector.CBID{Idx: 0x4242, Val: 1}
	seen := make(chan uint32, 1)
	mx := connector.NewMux()
	mx.HandleFunc(id, func(r connector.Request) {
		if len(r.Msg.Data) != 40 {
			t.Errorf("payload of %d bytes, want 40", len(r.Msg.Data))
		}
		seen <- r.Msg.Seq
	})
	// Other routes, so that lookups do real work.
	for v := range uint32(4) {
		mx.HandleFunc(connector.CBID{Idx: 0x4243, Val: v}, func(connector.Request) {})
	}
	mx.HandleIndex(0x4244, connector.HandlerFunc(func(connector.Request) {}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mx.Serve(ctx, rx, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	step := handoff(t, send, seen)
	// Warm up (pools, the Reader's batch). Serve is reading once the
	// first message got through, so the call below never reads rx itself.
	for range 2 * connector.DefaultBatchSize {
		step()
	}
	if withCall {
		callCtx, stop := context.WithCancel(context.Background())
		called := make(chan struct{})
		go func() {
			defer close(called)
			// Sent to the kernel for an id without agent where the Conn
			// cannot tell, or to our own port: no reply ever matches.
			_, _, _ = connector.Call(callCtx, rx, connector.Message{ID: connector.CBID{Idx: 0x4245, Val: 9}, Seq: 1}, connector.ToPort(rx.PortID()), connector.MatchSeqAck)
		}()
		defer func() {
			stop()
			<-called
		}()
	}
	return testing.AllocsPerRun(muxAllocRuns, step)
}

// handoff returns a step that sends the next message and waits until the
// receiving side reports its seq on seen.
func handoff(t *testing.T, send func(seq uint32) error, seen <-chan uint32) func() {
	seq := uint32(0)
	return func() {
		seq++
		if err := send(seq); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != seq {
			t.Fatalf("got seq %d, want %d", got, seq)
		}
	}
}

// readerAllocs measures the same hand-off as serveAllocs with a bare Reader
// loop in place of Serve: the baseline of the transport under it.
func readerAllocs(t *testing.T, rx *connector.Conn, send func(seq uint32) error) float64 {
	t.Helper()
	seen := make(chan uint32, 1)
	r := rx.NewReader()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, _, err := r.Next()
			if err != nil {
				return
			}
			seen <- m.Seq
		}
	}()
	defer func() {
		_ = rx.Flush()
		<-done
		r.Release()
	}()
	step := handoff(t, send, seen)
	for range 2 * connector.DefaultBatchSize {
		step()
	}
	return testing.AllocsPerRun(muxAllocRuns, step)
}

// TestAllocsMuxServeFake checks on the fake kernel that dispatching adds no
// allocation to what the fake's own hand-off between goroutines costs (it
// allocates a channel whenever a receive starts waiting).
func TestAllocsMuxServeFake(t *testing.T) {
	k := cntest.New(nil)
	rx, tx := testutil.Pair(t, k.Dial, nil)
	data := make([]byte, 40)
	send := func(seq uint32) error {
		return tx.SendTo(rx.PortID(), connector.Message{ID: connector.CBID{Idx: 0x4242, Val: 1}, Seq: seq, Data: data})
	}
	base := readerAllocs(t, rx, send)
	// The Flush that ended the baseline may still be pending for Serve's
	// new Reader: it returns ErrFlushed once, which Serve skips.
	for _, withCall := range []bool{false, true} {
		if a := serveAllocs(t, rx, send, withCall); a != base {
			t.Errorf("Mux.Serve (waiting call: %v) allocates %.2f times per dispatched message, the bare Reader %.2f: dispatch must add 0", withCall, a, base)
		}
	}
}

// TestAllocsMuxAsHandler guards Mux.ServeConnector, the path of a Mux
// mounted on another's route or given to WithUnmatched: routing by exact
// id, by index, to NotFound and counting a spoof allocate nothing.
func TestAllocsMuxAsHandler(t *testing.T) {
	mx := connector.NewMux()
	n := 0
	count := connector.HandlerFunc(func(connector.Request) { n++ })
	mx.Handle(connector.CBID{Idx: 0x4242, Val: 1}, count)
	mx.HandleIndex(0x4243, count)
	mx.NotFound(count)
	data := make([]byte, 40)
	reqs := []connector.Request{
		{Msg: connector.Message{ID: connector.CBID{Idx: 0x4242, Val: 1}, Data: data}},
		{Msg: connector.Message{ID: connector.CBID{Idx: 0x4243, Val: 7}, Data: data}},
		{Msg: connector.Message{ID: connector.CBID{Idx: 0x4244, Val: 7}, Data: data}},
		{Msg: connector.Message{ID: connector.IDProc, Data: data}, From: connector.Sender{Port: 9}},
	}
	if a := testing.AllocsPerRun(muxAllocRuns, func() {
		for _, r := range reqs {
			mx.ServeConnector(r)
		}
	}); a != 0 {
		t.Errorf("Mux.ServeConnector allocates %.2f times per 4 messages, want 0", a)
	}
	if want := 3 * (muxAllocRuns + 1); n != want {
		t.Errorf("handlers ran %d times, want %d", n, want)
	}
}
