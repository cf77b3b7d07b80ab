package connector_test

import (
	"context"
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
