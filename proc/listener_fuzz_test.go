package proc_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// FuzzListener feeds arbitrary datagrams through a Listener: it must never
// panic, and every error must leave it usable.
func FuzzListener(f *testing.F) {
	d := func(seq uint32, ev proc.Event) []byte { return cntest.MustDatagram(proctest.Message(&ev, seq)) }
	f.Add([]byte{}, false)
	f.Add(d(5, proc.Event{Kind: proc.KindExec, PID: 7, TGID: 7}), false)
	f.Add(append(d(5, proc.Event{Kind: proc.KindExit, CPU: 1, PID: 7, TGID: 7, ExitCode: 256, ExitSignal: 17}),
		d(9, proc.Event{Kind: proc.KindFork, CPU: 1, PID: 8, TGID: 8, ParentPID: 7, ParentTGID: 7})...), true)
	f.Add(cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 5, Data: []byte{1, 2}}), false)
	f.Fuzz(func(t *testing.T, data []byte, filtered bool) {
		// The fake answers at once; only a filtered Listen on a kernel
		// without proc_input (odd lengths here) waits out the timeout.
		fx := newFixture(&proctest.Options{Legacy: len(data)%2 == 1})
		cfg := &proc.Config{AckTimeout: 2 * time.Millisecond}
		if filtered {
			cfg.Kinds = proc.KindExit | proc.KindNonzeroExit
		}
		c := fx.dial(t, 4)
		l, err := fx.listenOn(t, c, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Split data into datagrams: each starts with a 1-byte length.
		n := 0
		for len(data) > 0 {
			size := min(int(data[0]), len(data)-1)
			_ = fx.k.InjectRaw(c.PortID(), connector.Sender{Group: 1}, data[1:1+size])
			data = data[1+size:]
			n++
		}
		if err := l.SetDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		var ev proc.Event
		for i := 0; i < 3*n+10; i++ {
			err := l.Next(&ev)
			switch {
			case err == nil:
				if !l.Match(&ev) && ev.Kind != proc.KindLost {
					t.Fatalf("filter %v delivered %v", l.Kinds(), &ev)
				}
			case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
			case errors.Is(err, connector.ErrOverrun):
				t.Fatalf("overrun returned as an error: %v", err)
			default:
				return // the deadline: everything was read
			}
		}
		t.Fatalf("%d datagrams still not read after %d calls", n, 3*n+10)
	})
}
