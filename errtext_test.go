package connector_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/net/bpf"
)

// checkText fails t if err's text repeats a word or carries the
// "connector:" prefix more than once.
func checkText(t *testing.T, what string, err error) {
	t.Helper()
	testutil.CheckErrorText(t, what, err, 0, "connector: ")
}

// TestErrorTexts walks the errors of the package's operations, on the fake
// kernel (and the real one where only it can fail that way), for doubled
// words and prefixes.
func TestErrorTexts(t *testing.T) {
	k := newKernel()
	procLike(k)
	for _, cfg := range []connector.Config{
		{ReadBufferSize: -1}, {NetNS: -1}, {MessageBufferSize: 1}, {BatchSize: -1},
		{BatchSize: connector.MaxBatchSize + 1}, {Senders: connector.SenderPolicy(99)},
		{Groups: []connector.Group{0}}, {Groups: []connector.Group{33}},
	} {
		_, err := k.Dial(&cfg)
		checkText(t, "Dial", err)
	}
	if _, err := connector.Dial(&connector.Config{NetNS: 1 << 20}); err != nil {
		checkText(t, "Dial with a bad NetNS", err)
	}
	c := dialT(t, k)
	b := dialT(t, k)
	checkText(t, "SetReadBuffer", c.SetReadBuffer(-1))
	checkText(t, "SetWriteBuffer", c.SetWriteBuffer(-1))
	checkText(t, "SetBPF too long", c.SetBPF(make([]bpf.RawInstruction, 4097)))
	checkText(t, "RemoveBPF on cntest", c.RemoveBPF())
	_, err := c.SyscallConn()
	checkText(t, "SyscallConn on cntest", err)
	checkText(t, "Join", c.JoinGroup(0))
	checkText(t, "SendTo a missing port", c.SendTo(0xfffffff, connector.Message{ID: idA}))
	checkText(t, "Send too large", c.Send(connector.Message{ID: idA, Data: make([]byte, 1<<20)}))
	_, _, err = connector.Call(ctxT(t), c, connector.Message{ID: connector.IDW1}, connector.Destination{}, connector.MatchSeqAck)
	checkText(t, "Call without agent", err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	_, _, err = connector.Call(ctx, c, connector.Message{ID: idA}, connector.ToPort(b.PortID()), connector.MatchSeqAck)
	cancel()
	checkText(t, "Call timeout", err)
	_, _, err = connector.Call(ctxT(t), c, connector.Message{ID: idA}, connector.Destination{Port: 1, Group: 20}, connector.MatchSeqAck)
	checkText(t, "Call to port and group", err)
	// A receive error while a call reads: a truncated datagram ends it
	// with one prefix.
	if err := k.Overrun(c.PortID()); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Receive()
	checkText(t, "Receive after an overrun", err)
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	_, _, err = c.Receive()
	checkText(t, "Receive past the deadline", err)
	c.Close()
	checkText(t, "Close twice", c.Close())
	checkText(t, "Send after Close", c.Send(connector.Message{ID: idA}))
	_, _, err = c.Receive()
	checkText(t, "Receive after Close", err)
	_, err = c.Drops()
	checkText(t, "Drops after Close", err)
	_, _, err = connector.Call(ctxT(t), c, connector.Message{ID: idA}, connector.ToPort(b.PortID()), connector.MatchSeqAck)
	checkText(t, "Call after Close", err)
	checkText(t, "Serve after Close", connector.NewMux().Serve(ctxT(t), c, nil))
}

// TestServeAndReaderTexts: what the docs promise the texts say. Serve's
// errors carry Op "serve" (a closed Conn, a nil Conn: no panic), and a
// released Reader says so while its Conn is open, still matching ErrClosed.
func TestServeAndReaderTexts(t *testing.T) {
	k := newKernel()
	c := dialT(t, k)
	r := c.NewReader()
	r.Release()
	_, _, err := r.Next()
	if !errors.Is(err, connector.ErrClosed) || !errors.Is(err, os.ErrClosed) || !strings.Contains(err.Error(), "released Reader") || strings.Contains(err.Error(), "closed connector connection") {
		t.Errorf("Next after Release on an open Conn: %v; want ErrClosed saying the Reader was released", err)
	}
	checkText(t, "Next after Release", err)

	err = connector.NewMux().Serve(ctxT(t), nil, nil)
	var oe *connector.OpError
	if !errors.As(err, &oe) || oe.Op != "serve" || !strings.Contains(err.Error(), "nil or zero-value *Conn") {
		t.Errorf("Serve on a nil Conn: %v; want an *OpError with Op serve naming the nil Conn", err)
	}
	checkText(t, "Serve on a nil Conn", err)

	c.Close()
	err = connector.NewMux().Serve(ctxT(t), c, nil)
	if want := "connector: serve: " + connector.ErrClosed.Error(); err == nil || err.Error() != want || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Serve after Close: %v; want %q matching os.ErrClosed", err, want)
	}
	_, _, err = r.Next()
	if !errors.Is(err, connector.ErrClosed) || strings.Contains(err.Error(), "released") {
		t.Errorf("Next after Release and Close: %v; want ErrClosed for the closed Conn", err)
	}
	checkText(t, "SendTo(0)", c.SendTo(0, connector.Message{ID: idA}))
	for _, to := range []connector.Destination{connector.ToPort(0), connector.ToGroup(0), connector.ToGroup(40)} {
		_, _, err := connector.Call(ctxT(t), c, connector.Message{ID: idA}, to, connector.MatchSeqAck)
		checkText(t, "Call to "+to.String(), err)
	}
}
