package proctest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// Payloads captured from Linux 6.18 (x86-64); the same captures seed
// package proc's decoder tests (a deliberate repeat: test data).
var kernelPayloads = map[string]string{
	"ack":      "0000000000000000d1aeff90ad000000000000000000000000000000000000000000000000000000",
	"fork":     "0100000001000000700248a6fd0000001f0500001f05000026050000260500000000000000000000",
	"exec":     "0200000001000000f6e14aa6fd000000260500002605000000000000000000000000000000000000",
	"uid":      "0400000001000000016c1ea7fd000000300500002c050000e1100000e11000000000000000000000",
	"gid":      "400000000100000003e51ba7fd000000300500002c05000029090000290900000000000000000000",
	"sid":      "80000000010000009f1e74a7fd000000310500003105000000000000000000000000000000000000",
	"ptrace":   "0001000001000000b01788a7fd00000036050000360500001f0500001f0500000000000000000000",
	"comm":     "00020000010000006444e6a7fd0000003705000037050000636e70726f632d636f6d6d0000000000",
	"coredump": "0000004000000000d44126aafd0000003c0500003c050000210500001f0500000000000000000000",
	"exit":     "000000800100000075eda6a6fd000000260500002605000000030000110000001f0500001f050000",
}

// AppendEvent re-encodes every decoded kernel capture byte for byte.
func TestAppendEventMatchesKernel(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the captures are little-endian")
	}
	for name, h := range kernelPayloads {
		want, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		var ev proc.Event
		if err := proc.Decode(connector.Message{ID: connector.IDProc, Data: want}, &ev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := proctest.AppendEvent(nil, &ev); !bytes.Equal(got, want) {
			t.Errorf("%s: AppendEvent\n got %x\nwant %x", name, got, want)
		}
	}
}

func dial(t *testing.T, k *cntest.Kernel) *connector.Conn {
	t.Helper()
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{1}, Senders: connector.SendersKernelOnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// request sends a subscription request: 4 bytes when input is false, else
// struct proc_input with kinds.
func request(t *testing.T, c *connector.Conn, op uint32, kinds proc.Kind, input bool, ack uint32) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint32(b[:], op)
	binary.NativeEndian.PutUint32(b[4:], uint32(kinds))
	d := b[:4]
	if input {
		d = b[:]
	}
	if err := c.Send(connector.Message{ID: connector.IDProc, Ack: ack, Data: d}); err != nil {
		t.Fatal(err)
	}
}

// drain returns the kinds (and ack errors) queued on c, without blocking.
func drain(t *testing.T, k *cntest.Kernel, c *connector.Conn) []proc.Event {
	t.Helper()
	var evs []proc.Event
	for k.Queued(c.PortID()) > 0 {
		msgs, _, err := c.Receive()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			var ev proc.Event
			if err := proc.Decode(m, &ev); err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
	}
	return evs
}

// The per-socket filter follows cn_filter (drivers/connector/cn_proc.c,
// Linux 6.6; kernel-connector.md 6.5): no state gets everything, IGNORE
// nothing, ALL everything, NONZERO_EXIT the failed exits, otherwise the
// selected kinds; acknowledgements only reach sockets with no state or ALL.
func TestFilter(t *testing.T) {
	k := cntest.New(nil)
	a := proctest.New(k, nil)
	passive := dial(t, k)
	all := dial(t, k)
	request(t, all, 1, 0, true, 1) // 0 means ALL
	execExit := dial(t, k)
	request(t, execExit, 1, proc.KindExec|proc.KindExit, true, 2)
	nonzero := dial(t, k)
	request(t, nonzero, 1, proc.KindNonzeroExit, true, 3)
	unknownBits := dial(t, k)
	request(t, unknownBits, 1, 0x400, true, 4) // masked to 0: ALL
	ignored := dial(t, k)
	request(t, ignored, 1, 0, false, 5)
	request(t, ignored, 2, 0, false, 6)
	for _, c := range []*connector.Conn{passive, all, execExit, nonzero, unknownBits, ignored} {
		drain(t, k, c)
	}
	if n := a.Listeners(); n != 4 {
		t.Errorf("listener count %d, want 4 (the ignored socket counted once and uncounted)", n)
	}
	a.Emit(proc.Event{Kind: proc.KindFork, PID: 2, TGID: 2})
	a.Emit(proc.Event{Kind: proc.KindExec, PID: 2, TGID: 2})
	a.Emit(proc.Event{Kind: proc.KindExit, PID: 2, TGID: 2})
	a.Emit(proc.Event{Kind: proc.KindExit, PID: 3, TGID: 3, ExitCode: 9})
	request(t, dial(t, k), 1, 0, false, 7) // an ack from someone else
	type want struct {
		c     *connector.Conn
		kinds []proc.Kind
	}
	F, E, X, N := proc.KindFork, proc.KindExec, proc.KindExit, proc.KindNone
	for name, w := range map[string]want{
		"passive":      {passive, []proc.Kind{F, E, X, X, N}},
		"all":          {all, []proc.Kind{F, E, X, X, N}},
		"exec|exit":    {execExit, []proc.Kind{E, X, X}},
		"nonzero exit": {nonzero, []proc.Kind{X}},
		"unknown bits": {unknownBits, []proc.Kind{F, E, X, X, N}},
		"ignored":      {ignored, nil},
	} {
		var got []proc.Kind
		for _, ev := range drain(t, k, w.c) {
			got = append(got, ev.Kind)
		}
		if !equal(got, w.kinds) {
			t.Errorf("%s socket got %v, want %v", name, got, w.kinds)
		}
	}
	if f, ok := a.Filter(nonzero.PortID()); !ok || f != proc.KindNonzeroExit {
		t.Errorf("Filter(nonzero) = %v, %v", f, ok)
	}
	if _, ok := a.Filter(passive.PortID()); ok {
		t.Error("a socket that sent nothing has kernel state")
	}
}

func equal(a, b []proc.Kind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Listener counting and acknowledgements (kernel-connector.md 6.2, 6.3,
// 6.6): only a socket's first LISTEN counts on 6.6+; nothing is generated
// while nobody listens; the IGNORE that takes the count to 0 gets no
// acknowledgement; a bad op gets EINVAL; sequence numbers are shared by
// events and acknowledgements.
func TestCountingAndAcks(t *testing.T) {
	k := cntest.New(nil)
	a := proctest.New(k, &proctest.Options{AckCPU: 1})
	c := dial(t, k)
	if _, _, ok := a.Emit(proc.Event{Kind: proc.KindExec}); ok {
		t.Fatal("an event was generated with no listener")
	}
	request(t, c, 1, 0, false, 10)
	request(t, c, 1, 0, false, 11) // again: not counted twice
	if n := a.Listeners(); n != 1 {
		t.Errorf("listener count %d, want 1", n)
	}
	a.Emit(proc.Event{Kind: proc.KindExec, CPU: 1})
	request(t, c, 3, 0, false, 12)
	evs := drain(t, k, c)
	if len(evs) != 4 {
		t.Fatalf("got %d messages, want 4: %v", len(evs), evs)
	}
	for i, w := range []struct {
		kind   proc.Kind
		seq    uint32
		ack    uint32
		ackErr uint32
	}{{proc.KindNone, 0, 11, 0}, {proc.KindNone, 1, 12, 0}, {proc.KindExec, 2, 0, 0}, {proc.KindNone, 3, 13, 22}} {
		ev := evs[i]
		if ev.Kind != w.kind || ev.Seq != w.seq || ev.Ack != w.ack || ev.AckErr != w.ackErr || ev.CPU != 1 {
			t.Errorf("message %d = %v (ack %d, err %d), want kind %v seq %d ack %d err %d on cpu 1", i, &ev, ev.Ack, ev.AckErr, w.kind, w.seq, w.ack, w.ackErr)
		}
	}
	// The bogus op was stored, and it is not IGNORE: IGNORE uncounts.
	request(t, c, 2, 0, false, 20)
	drain(t, k, c)
	if n := a.Listeners(); n != 0 {
		t.Errorf("listener count %d after op 3 then IGNORE, want 0", n)
	}
	other := dial(t, k)
	request(t, other, 1, 0, false, 30)
	request(t, other, 2, 0, false, 31)
	if got := a.Requests(); got[len(got)-1].Answered {
		t.Error("the IGNORE that took the count to 0 was acknowledged")
	}
	if n := a.Listeners(); n != 0 {
		t.Errorf("listener count %d, want 0", n)
	}
}

// Kernels before 6.6 ignore struct proc_input, filter nothing and count
// every LISTEN and IGNORE globally.
func TestLegacy(t *testing.T) {
	k := cntest.New(nil)
	a := proctest.New(k, &proctest.Options{Legacy: true})
	c := dial(t, k)
	request(t, c, 1, proc.KindExit, true, 1)
	if got := a.Requests(); len(got) != 1 || got[0].Answered || a.Listeners() != 0 {
		t.Fatalf("8-byte request before 6.6: %+v, count %d; want ignored", got, a.Listeners())
	}
	request(t, c, 1, 0, false, 2)
	request(t, c, 1, 0, false, 3)
	if n := a.Listeners(); n != 2 {
		t.Errorf("listener count %d after two LISTENs, want 2", n)
	}
	request(t, c, 2, 0, false, 4)
	request(t, c, 2, 0, false, 5)
	request(t, c, 2, 0, false, 6)
	if n := a.Listeners(); n != -1 {
		t.Errorf("listener count %d after three IGNOREs, want -1 (a stray IGNORE switches events off)", n)
	}
	if _, _, ok := a.Emit(proc.Event{Kind: proc.KindExec}); ok {
		t.Error("an event was generated with the count below 1")
	}
}

// A silent kernel (a sender outside the initial namespaces) answers
// nothing, but still sends events while someone else listens.
func TestSilent(t *testing.T) {
	k := cntest.New(nil)
	a := proctest.New(k, &proctest.Options{Silent: true})
	c := dial(t, k)
	request(t, c, 1, 0, false, 1)
	if n := k.Queued(c.PortID()); n != 0 || a.Listeners() != 0 {
		t.Fatalf("silent kernel queued %d messages, count %d", n, a.Listeners())
	}
	a.SetListeners(1)
	a.Emit(proc.Event{Kind: proc.KindExec, PID: 4, TGID: 4})
	if evs := drain(t, k, c); len(evs) != 1 || evs[0].PID != 4 {
		t.Errorf("events %v, want the exec", evs)
	}
}

// Lose consumes sequence numbers silently; Drop also counts drops and
// reports an overrun.
func TestLoss(t *testing.T) {
	k := cntest.New(nil)
	a := proctest.New(k, nil)
	c := dial(t, k)
	a.SetListeners(1)
	a.Lose(0, 3)
	if k.Drops(c.PortID()) != 0 {
		t.Error("Lose counted a drop")
	}
	a.Drop(0, 2)
	if n := k.Drops(c.PortID()); n != 2 {
		t.Errorf("Drops = %d after Drop(0, 2), want 2", n)
	}
	if _, _, err := c.Receive(); err == nil {
		t.Error("no overrun reported after Drop")
	}
	seq, _, _ := a.Emit(proc.Event{Kind: proc.KindExec})
	if seq != 5 {
		t.Errorf("next sequence number %d, want 5", seq)
	}
}

// TestListenerLoss checks that a Listener on the fake reports loss in every
// mode as it does on the kernel: events lost to a full receive buffer (Drop)
// are counted from the socket's drop counter, which cntest keeps as the
// kernel keeps sk_drops; events that never reach any socket (Lose) are
// counted only where the socket receives every message (before Linux 6.6,
// without a socket filter: Legacy on a cntest socket, which has no BPF),
// because only there a sequence gap is a loss by itself.
func TestListenerLoss(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   *proctest.Options
		kinds  proc.Kind
		mode   proc.Mode
		lose   bool
		wantCt uint32 // events the KindLost records count
	}{
		{"6.6 all/Drop", nil, 0, proc.ModeAll, false, 3},
		{"6.6 all/Lose", nil, 0, proc.ModeAll, true, 0},
		{"6.6 kernel filter/Drop", nil, proc.KindExec, proc.ModeKernelFilter, false, 3},
		{"6.6 kernel filter/Lose", nil, proc.KindExec, proc.ModeKernelFilter, true, 0},
		{"legacy all/Drop", &proctest.Options{Legacy: true}, 0, proc.ModeAll, false, 3},
		{"legacy all/Lose", &proctest.Options{Legacy: true}, 0, proc.ModeAll, true, 3},
		{"legacy user filter/Drop", &proctest.Options{Legacy: true}, proc.KindExec, proc.ModeUserFilter, false, 3},
		{"legacy user filter/Lose", &proctest.Options{Legacy: true}, proc.KindExec, proc.ModeUserFilter, true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := cntest.New(nil)
			a := proctest.New(k, tc.opts)
			c := dial(t, k)
			l, err := proc.NewListener(c, &proc.Config{Kinds: tc.kinds})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := l.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if l.Mode() != tc.mode {
				t.Fatalf("mode %v, want %v", l.Mode(), tc.mode)
			}
			a.Emit(proc.Event{Kind: proc.KindExec, CPU: 0, PID: 1, TGID: 1})
			if tc.lose {
				a.Lose(0, 3)
			} else {
				a.Drop(0, 3)
			}
			var ev proc.Event
			var counted uint32
			overruns, first, emitted := 0, false, false
			for {
				if !emitted && first && (tc.lose || overruns > 0) {
					// The next event after the loss; after a Drop, only
					// once the overrun was read and the queue drained:
					// until then a congested socket drops every
					// multicast, as the kernel's does
					// (NETLINK_S_CONGESTED).
					a.Emit(proc.Event{Kind: proc.KindExec, CPU: 0, PID: 2, TGID: 2})
					emitted = true
				}
				if err := l.Next(&ev); err != nil {
					t.Fatal(err)
				}
				if ev.Kind == proc.KindExec && ev.PID == 2 {
					break
				}
				first = first || ev.Kind == proc.KindExec && ev.PID == 1
				if ev.Kind != proc.KindLost {
					continue
				}
				switch {
				case ev.Lost == 0 && ev.CPU == proc.CPUUnknown:
					overruns++ // the kernel's overrun report
				case ev.CPU != 0:
					t.Errorf("KindLost on CPU %d, want 0: %v", ev.CPU, &ev)
				}
				counted += ev.Lost
			}
			if counted != tc.wantCt {
				t.Errorf("KindLost records count %d lost events, want %d", counted, tc.wantCt)
			}
			if want := map[bool]int{false: 1, true: 0}[tc.lose]; overruns != want {
				t.Errorf("%d overrun records, want %d", overruns, want)
			}
			st := l.Stats()
			if st.Lost != uint64(tc.wantCt) {
				t.Errorf("Stats.Lost %d, want %d", st.Lost, tc.wantCt)
			}
			drops, err := l.Drops()
			if want := map[bool]uint64{false: 3, true: 0}[tc.lose]; err != nil || drops != want {
				t.Errorf("Drops() = %d, %v; want %d (the fake kernel's count)", drops, err, want)
			}
		})
	}
}
