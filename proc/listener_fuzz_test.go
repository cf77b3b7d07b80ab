package proc_test

import (
	"errors"
	"sync"
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
		// One Listener per kind of kernel (6.6+ or older, chosen by the
		// parity of the input's length) and filtering, made once per
		// process: an older kernel makes a subscription wait out its
		// timeout, which each input must not pay.
		which := 0
		if len(data)%2 == 1 {
			which++
		}
		if filtered {
			which += 2
		}
		fz := &fuzzListeners[which]
		fz.once.Do(func() {
			fz.fx = newFixture(&proctest.Options{Legacy: which%2 == 1})
			cfg := &proc.Config{AckTimeout: 50 * time.Millisecond}
			if filtered {
				cfg.Kinds = proc.KindExit | proc.KindNonzeroExit
			}
			fz.c = fz.fx.dial(t, 4)
			fz.l, fz.err = proc.NewListener(fz.c, cfg)
		})
		if fz.err != nil {
			t.Fatal(fz.err)
		}
		fx, c, l := fz.fx, fz.c, fz.l
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

// fuzzListeners are FuzzListener's Listeners, made once per process and
// kept until it exits.
var fuzzListeners [4]struct {
	once sync.Once
	fx   *fixture
	c    *connector.Conn
	l    *proc.Listener
	err  error
}
