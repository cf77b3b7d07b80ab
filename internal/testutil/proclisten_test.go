package testutil

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// procAgent makes k play the proc connector: a LISTEN or IGNORE gets an
// acknowledgement (what = PROC_EVENT_NONE, ack + 1, error 0) on group 1.
// Before the first n LISTENs are acknowledged, other traffic overruns
// c's buffer: a queued event and an overrun, so the socket is congested
// and the kernel drops the acknowledgement, as a busy group 1 does.
func procAgent(t *testing.T, n int) (*cntest.Kernel, *connector.Conn, *int) {
	t.Helper()
	k := cntest.New(nil)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{connector.IDProc.Group()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	listens := 0
	k.Handle(connector.IDProc, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		if len(req.Data) >= 4 && binary.NativeEndian.Uint32(req.Data) == 1 {
			listens++
		}
		return []cntest.Reply{{Message: connector.Message{ID: connector.IDProc, Ack: req.Ack + 1, Data: make([]byte, 40)}, Group: 1}}
	})
	for range n {
		// An event queued, then the overrun: congested until read empty.
		if _, err := k.Multicast(1, connector.Message{ID: connector.IDProc, Data: []byte{1, 0, 0, 0}}); err != nil {
			t.Fatal(err)
		}
		if err := k.Overrun(c.PortID()); err != nil {
			t.Fatal(err)
		}
	}
	return k, c, &listens
}

func callTry(c *connector.Conn) func(ctx context.Context, p ProcTry) (bool, error) {
	return func(ctx context.Context, p ProcTry) (bool, error) {
		req := connector.Message{ID: connector.IDProc, Ack: p.Ack, Data: []byte{1, 0, 0, 0}}
		_, _, err := connector.Call(ctx, c, req, connector.Destination{}, connector.MatchAckPlusOne)
		return err == nil || !errors.Is(err, connector.ErrNoAgent), err
	}
}

// TestProcListenAckSurvivesOverrun: the first acknowledgement is dropped by
// a congested socket; ProcListenAck sends LISTEN again and gets the second
// one, and sends one IGNORE per LISTEN when the test ends. A lone Call, the
// wait the tests had before, times out on the same input.
func TestProcListenAckSurvivesOverrun(t *testing.T) {
	t.Run("lone Call", func(t *testing.T) {
		_, c, _ := procAgent(t, 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := callTry(c)(ctx, ProcTry{Ack: 7})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a lone Call after the overrun: %v, want the deadline (the acknowledgement was dropped)", err)
		}
	})
	var k *cntest.Kernel
	var listens *int
	t.Run("ProcListenAck", func(t *testing.T) {
		var c *connector.Conn
		k, c, listens = procAgent(t, 1)
		start := time.Now()
		ProcListenAck(t, ProcListen{
			Try:      callTry(c),
			Overruns: func() uint64 { return c.Stats().Overruns },
			Ignore: func() error {
				return c.Send(connector.Message{ID: connector.IDProc, Data: []byte{2, 0, 0, 0}})
			},
		})
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("acknowledged after %v: the overrun was not noticed at once", d)
		}
		if *listens != 2 {
			t.Errorf("%d LISTENs sent, want 2 (the first one's acknowledgement was dropped)", *listens)
		}
	})
	ignores := 0
	for _, r := range k.Requests() {
		if binary.NativeEndian.Uint32(r.Message.Data) == 2 {
			ignores++
		}
	}
	if ignores != *listens {
		t.Errorf("%d IGNOREs sent at cleanup for %d LISTENs", ignores, *listens)
	}
}
