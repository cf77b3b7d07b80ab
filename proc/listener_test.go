package proc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
	"github.com/google/go-cmp/cmp"
)

// Kernel ABI values the tests check requests against
// (include/uapi/linux/cn_proc.h).
const (
	opListen = 1
	opIgnore = 2
)

// A fixture is a fake kernel with the process events agent.
type fixture struct {
	k *cntest.Kernel
	a *proctest.Agent
}

func newFixture(opts *proctest.Options) *fixture {
	k := cntest.New(nil)
	return &fixture{k: k, a: proctest.New(k, opts)}
}

// dial opens a Conn configured as Listen configures its own.
func (f *fixture) dial(t testing.TB, batch int) *connector.Conn {
	t.Helper()
	c, err := f.k.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		MessageBufferSize: proc.MessageBufferSize,
		BatchSize:         batch,
		Senders:           connector.SendersKernelOnly,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// listen subscribes a Listener on a new Conn; the Listener is closed when
// the test ends.
func (f *fixture) listen(t testing.TB, cfg *proc.Config) (*proc.Listener, error) {
	t.Helper()
	c := f.dial(t, 4)
	return f.listenOn(t, c, cfg)
}

// nextStrings reads n events from l and appends what each one's String
// says to got, failing the test on an error.
func nextStrings(t testing.TB, l *proc.Listener, got []string, n int) []string {
	t.Helper()
	var ev proc.Event
	for range n {
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.String())
	}
	return got
}

// mustListen subscribes a Listener with cfg on a new Conn, as listen does,
// and returns both; it fails the test if the subscription fails.
func (f *fixture) mustListen(t testing.TB, cfg *proc.Config) (*proc.Listener, *connector.Conn) {
	t.Helper()
	c := f.dial(t, 4)
	l, err := f.listenOn(t, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

func (f *fixture) listenOn(t testing.TB, c *connector.Conn, cfg *proc.Config) (*proc.Listener, error) {
	t.Helper()
	if cfg == nil {
		cfg = &proc.Config{}
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 100 * time.Millisecond
	}
	l, err := proc.NewListener(c, cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { l.Close() })
	return l, nil
}

// emit sends an event and fails the test if nobody listens.
func (f *fixture) emit(t testing.TB, ev proc.Event) uint32 {
	t.Helper()
	seq, _, ok := f.a.Emit(ev)
	if !ok {
		t.Fatal("the fake kernel generated no event: no listener")
	}
	return seq
}

func exec(cpu uint32, pid int32) proc.Event {
	return proc.Event{Kind: proc.KindExec, CPU: cpu, PID: pid, TGID: pid}
}

func exit(cpu uint32, pid int32, code uint32) proc.Event {
	return proc.Event{Kind: proc.KindExit, CPU: cpu, PID: pid, TGID: pid, ExitCode: code, ExitSignal: 17}
}

// request describes a subscription request: op and, for the 8-byte form,
// the filter.
type request struct {
	Op    uint32
	Kinds proc.Kind
	Input bool
}

func requests(t *testing.T, a *proctest.Agent) []request {
	t.Helper()
	var rs []request
	for _, r := range a.Requests() {
		switch r.Len {
		case 4:
			rs = append(rs, request{Op: r.Op})
		case 8:
			rs = append(rs, request{Op: r.Op, Kinds: r.Kinds, Input: true})
		default:
			t.Fatalf("request of %d bytes: %+v", r.Len, r)
		}
	}
	return rs
}

// sendRequest sends a raw subscription request from c, as another process
// would.
func sendRequest(t *testing.T, c *connector.Conn, op, ack uint32) {
	t.Helper()
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], op)
	if err := c.Send(connector.Message{ID: connector.IDProc, Ack: ack, Data: b[:]}); err != nil {
		t.Fatal(err)
	}
}

func TestListenHandshake(t *testing.T) {
	for _, tc := range []struct {
		name     string
		legacy   bool
		kinds    proc.Kind
		mode     proc.Mode
		requests []request
	}{
		// Unfiltered on 6.6+: every kind, but no acknowledgements.
		{"unfiltered", false, 0, proc.ModeAll, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen, Kinds: ^proc.KindNonzeroExit, Input: true},
		}},
		{"KindAll is unfiltered", false, proc.KindAll, proc.ModeAll, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen, Kinds: ^proc.KindNonzeroExit, Input: true},
		}},
		// Unknown bits only: refused (TestKindsWithoutKind).
		{"unfiltered before 6.6", true, 0, proc.ModeAll, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen},
		}},
		{"kernel filter", false, proc.KindExec | proc.KindExit, proc.ModeKernelFilter, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen, Kinds: proc.KindExec | proc.KindExit, Input: true},
		}},
		{"kernel filter without unknown bits", false, proc.KindExec | 0x400 | proc.KindLost, proc.ModeKernelFilter, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen, Kinds: proc.KindExec, Input: true},
		}},
		{"nonzero exit filter", false, proc.KindNonzeroExit, proc.ModeKernelFilter, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen, Kinds: proc.KindNonzeroExit, Input: true},
		}},
		{"fallback before 6.6", true, proc.KindExec, proc.ModeUserFilter, []request{
			{Op: opListen, Kinds: proc.KindAll, Input: true},
			{Op: opListen},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(&proctest.Options{Legacy: tc.legacy})
			l, err := f.listen(t, &proc.Config{Kinds: tc.kinds})
			if err != nil {
				t.Fatal(err)
			}
			if l.Mode() != tc.mode {
				t.Errorf("Mode() = %v, want %v", l.Mode(), tc.mode)
			}
			if diff := cmp.Diff(tc.requests, requests(t, f.a)); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			if n := f.a.Listeners(); n != 1 {
				t.Errorf("kernel listener count %d after Listen, want 1", n)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			want := append(tc.requests, request{Op: opIgnore})
			if diff := cmp.Diff(want, requests(t, f.a)); diff != "" {
				t.Errorf("requests after Close (-want +got):\n%s", diff)
			}
			if n := f.a.Listeners(); n != 0 {
				t.Errorf("kernel listener count %d after Close, want 0", n)
			}
			if err := l.Close(); !errors.Is(err, connector.ErrClosed) {
				t.Errorf("second Close: %v, want ErrClosed", err)
			}
			if n := len(f.a.Requests()); n != len(want) {
				t.Errorf("second Close sent another request (%d in all)", n)
			}
		})
	}
}

func TestNewListenerChecks(t *testing.T) {
	f := newFixture(nil)
	t.Run("joins group 1", func(t *testing.T) {
		c, err := f.k.Dial(&connector.Config{MessageBufferSize: proc.MinMessageBufferSize, Senders: connector.SendersKernelOnly})
		if err != nil {
			t.Fatal(err)
		}
		l, err := f.listenOn(t, c, nil)
		if err != nil {
			t.Fatalf("NewListener on a Conn without group 1: %v", err)
		}
		if got := f.k.Members(1); !contains(got, c.PortID()) {
			t.Errorf("group 1 members %v, want port %d", got, c.PortID())
		}
		f.emit(t, exec(0, 5))
		var ev proc.Event
		if err := l.Next(&ev); err != nil || ev.PID != 5 {
			t.Fatalf("Next = %v, %v", &ev, err)
		}
	})
	t.Run("unprivileged join of group 1", func(t *testing.T) {
		c, err := f.k.DialUnprivileged(&connector.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.listenOn(t, c, nil); err != nil {
			t.Fatalf("NewListener as an unprivileged user: %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		cfg  connector.Config
		pcfg proc.Config
		want string
		// not is what the error must not say: a field that was not set.
		not string
	}{
		{"message buffer", connector.Config{MessageBufferSize: 64}, proc.Config{}, "MessageBufferSize of 64 bytes", ""},
		{"user senders", connector.Config{Senders: connector.SendersAny}, proc.Config{}, "SendersAny", ""},
		{"NetNS", connector.Config{}, proc.Config{NetNS: 3}, "Config.NetNS configures the socket Listen opens; set it in", "BatchSize"},
		{"BatchSize", connector.Config{}, proc.Config{BatchSize: 3}, "Config.BatchSize configures the socket Listen opens; set it in", "NetNS"},
		{"both", connector.Config{}, proc.Config{NetNS: 3, BatchSize: 3}, "Config.NetNS and Config.BatchSize configure the socket Listen opens; set them in", ""},
		{"KernelWait", connector.Config{}, proc.Config{KernelWait: true}, "Config.KernelWait configures the socket Listen opens; set it in", "BatchSize"},
		{"three", connector.Config{}, proc.Config{BatchSize: 3, KernelWait: true, RawWait: true}, "Config.BatchSize, Config.KernelWait and Config.RawWait configure", "NetNS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.k.Dial(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = proc.NewListener(c, &tc.pcfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.not != "" && strings.Contains(err.Error(), tc.not)) {
				t.Fatalf("NewListener: %v, want an error saying %q and not naming %q", err, tc.want, tc.not)
			}
			// Nothing was sent: the checks come first.
			for _, r := range f.k.Requests() {
				if r.From.Port == c.PortID() {
					t.Errorf("a request was sent despite the error: %+v", r.Message)
				}
			}
		})
	}
	for _, cfg := range []proc.Config{{ReadBufferSize: -1}, {AckTimeout: -time.Second}, {BatchSize: -1}, {BatchSize: connector.MaxBatchSize + 1}} {
		c := f.dial(t, 4)
		if _, err := proc.NewListener(c, &cfg); !errors.Is(err, connector.ErrInvalidConfig) {
			t.Errorf("NewListener(%+v): %v, want ErrInvalidConfig", cfg, err)
		}
		if _, err := proc.Listen(&cfg); !errors.Is(err, connector.ErrInvalidConfig) {
			t.Errorf("Listen(%+v): %v, want ErrInvalidConfig", cfg, err)
		}
		c.Close()
	}
	t.Run("no agent", func(t *testing.T) {
		// A kernel without process events: the subscription fails at
		// once, not after the acknowledgement timeout.
		k := cntest.New(nil)
		c, err := k.Dial(&connector.Config{Groups: []connector.Group{1}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, err = proc.NewListener(c, &proc.Config{AckTimeout: 10 * time.Second})
		if !errors.Is(err, proc.ErrNoProcEvents) || !errors.Is(err, connector.ErrNoAgent) {
			t.Fatalf("NewListener without a cn_proc agent: %v, want ErrNoProcEvents and ErrNoAgent", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c := f.dial(t, 4)
		c.Close()
		if _, err := proc.NewListener(c, nil); !errors.Is(err, connector.ErrClosed) {
			t.Fatalf("NewListener on a closed Conn: %v, want ErrClosed", err)
		}
	})
	t.Run("nil", func(t *testing.T) {
		if _, err := proc.NewListener(nil, nil); err == nil {
			t.Fatal("NewListener(nil) succeeded")
		}
	})
	t.Run("socket options", func(t *testing.T) {
		l, _ := f.mustListen(t, &proc.Config{ReadBufferSize: 10 * 832, NoENOBUFS: true})
		n, err := l.ReadBuffer()
		if err != nil || n != 2*10*832 {
			t.Errorf("ReadBuffer() = %d, %v; want %d (doubled, as the kernel reports it)", n, err, 2*10*832)
		}
	})
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Other clients' acknowledgements never pass for the Listener's own: those
// queued before the subscription are skipped, and after it the kernel's
// filter keeps them out (6.6+) or Next skips them (before 6.6, on a socket
// without a BPF filter, as on the fake). An event queued before the
// acknowledgement is delivered, first.
func TestListenNonce(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		f := newFixture(&proctest.Options{Legacy: legacy})
		c := f.dial(t, 4)
		other := f.dial(t, 4)
		defer other.Close()
		sendRequest(t, other, opListen, 0)
		sendRequest(t, other, 3, 0x12345678) // EINVAL
		f.emit(t, proc.Event{Kind: proc.KindFork, CPU: 1, PID: 2, TGID: 2, ParentPID: 1, ParentTGID: 1})
		l, err := f.listenOn(t, c, &proc.Config{AckTimeout: 20 * time.Millisecond})
		if err != nil {
			t.Fatalf("legacy %v: Listen with other clients' acks queued: %v", legacy, err)
		}
		if got := l.Stats().Acks; got != 1 {
			t.Errorf("legacy %v: Stats().Acks = %d after Listen, want 1 (its own)", legacy, got)
		}
		sendRequest(t, other, opListen, 5)
		f.emit(t, exec(1, 3))
		var ev proc.Event
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind != proc.KindFork || ev.PID != 2 {
			t.Errorf("legacy %v: Next = %v, want the fork queued before the acknowledgement", legacy, &ev)
		}
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind != proc.KindExec || ev.PID != 3 {
			t.Errorf("legacy %v: Next = %v, want the exec", legacy, &ev)
		}
		// Its own, and the other's two queued before it, skipped.
		want := uint64(3)
		if legacy {
			want = 4 // the other's later acknowledgement reached the socket and was skipped
		}
		if got := l.Stats().Acks; got != want {
			t.Errorf("legacy %v: Stats().Acks = %d, want %d", legacy, got, want)
		}
	}
}

// An unprivileged flooder's acknowledgements do not cost a Listener any
// event: on 6.6+ the kernel filter keeps them out in every mode.
func TestAckFlood(t *testing.T) {
	for _, kinds := range []proc.Kind{0, proc.KindFork | proc.KindExit} {
		f := newFixture(nil)
		l, c := f.mustListen(t, &proc.Config{Kinds: kinds})
		flooder, err := f.k.DialUnprivileged(&connector.Config{})
		if err != nil {
			t.Fatal(err)
		}
		const forks = 100
		for i := range forks {
			for range 20 {
				sendRequest(t, flooder, 3, uint32(i)) // invalid op: an EINVAL ack for every group-1 socket
			}
			f.emit(t, proc.Event{Kind: proc.KindFork, PID: int32(1000 + i), TGID: int32(1000 + i), ParentPID: 1, ParentTGID: 1})
			f.emit(t, exit(0, int32(1000+i), 0))
		}
		flooder.Close()
		var ev proc.Event
		for i := range 2 * forks {
			if err := l.Next(&ev); err != nil {
				t.Fatal(err)
			}
			want := int32(1000 + i/2)
			if ev.PID != want || (i%2 == 0) != (ev.Kind == proc.KindFork) {
				t.Fatalf("kinds %v: event %d = %v, want the fork or exit of %d", kinds, i, &ev, want)
			}
		}
		if st := l.Stats(); st.Acks != 1 || st.Lost != 0 || st.Overruns != 0 || f.k.Drops(c.PortID()) != 0 {
			t.Errorf("kinds %v: Stats %+v, drops %d; want only the own ack, no loss", kinds, st, f.k.Drops(c.PortID()))
		}
	}
}

func TestListenErrors(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()

	t.Run("no ack", func(t *testing.T) {
		f := newFixture(&proctest.Options{Silent: true})
		start := time.Now()
		_, err := f.listen(t, &proc.Config{AckTimeout: 50 * time.Millisecond})
		if !errors.Is(err, proc.ErrNoAck) {
			t.Fatalf("Listen: %v, want ErrNoAck", err)
		}
		// The message names the timeout, and claims nothing about the
		// kernel's version: this Conn is a fake's.
		if msg := err.Error(); !strings.Contains(msg, "Config.AckTimeout") || !strings.Contains(msg, "not a kernel socket") {
			t.Errorf("ErrNoAck on a fake: %q, want it to name Config.AckTimeout and say the kernel version is no evidence", msg)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Listen took %v", d)
		}
	})
	t.Run("namespace", func(t *testing.T) {
		defer proc.SetNamespaceCheck(func() error { return proc.ErrNamespace })()
		f := newFixture(&proctest.Options{Silent: true})
		_, err := f.listen(t, &proc.Config{Kinds: proc.KindExit, AckTimeout: 20 * time.Millisecond})
		if !errors.Is(err, proc.ErrNamespace) {
			t.Fatalf("Listen: %v, want ErrNamespace", err)
		}
	})
	t.Run("permission", func(t *testing.T) {
		f := newFixture(&proctest.Options{Legacy: true})
		f.a.SetAckError(syscall.EPERM)
		f.a.SetListeners(1) // someone else listens, so the error is acknowledged
		_, err := f.listen(t, &proc.Config{Kinds: proc.KindExit, AckTimeout: 20 * time.Millisecond})
		if !errors.Is(err, os.ErrPermission) || !errors.Is(err, syscall.EPERM) {
			t.Fatalf("Listen: %v, want a permission error", err)
		}
		if n := f.a.Listeners(); n != 1 {
			t.Errorf("listener count %d after a refused Listen, want 1 (no IGNORE sent)", n)
		}
	})
	t.Run("ack error", func(t *testing.T) {
		f := newFixture(nil)
		f.a.SetAckError(syscall.ENOMEM)
		f.a.SetListeners(1)
		_, err := f.listen(t, nil)
		if !errors.Is(err, syscall.ENOMEM) {
			t.Fatalf("Listen: %v, want ENOMEM", err)
		}
	})
	t.Run("ack lost to overrun", func(t *testing.T) {
		f := newFixture(nil)
		f.a.DropAcks(1)
		l, err := f.listen(t, nil)
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		if n := len(f.a.Requests()); n != 3 {
			t.Errorf("%d requests, want 3 (the probe twice, resent after the overrun, then the filter)", n)
		}
		if st := l.Stats(); st.Overruns != 1 {
			t.Errorf("Stats %+v, want 1 overrun", st)
		}
	})
	t.Run("not the kernel", func(t *testing.T) {
		// A spoofed acknowledgement from a userspace port does not count.
		f := newFixture(nil)
		c := f.dial(t, 4)
		f.k.Handle(connector.IDProc, func(req connector.Message, from connector.Sender) []cntest.Reply {
			d := cntest.MustDatagram(proctest.Message(&proc.Event{Kind: proc.KindNone, Ack: req.Ack + 1}, 1))
			_ = f.k.InjectRaw(from.Port, connector.Sender{Port: 77, Group: 1}, d)
			return nil
		})
		_, err := f.listenOn(t, c, &proc.Config{AckTimeout: 100 * time.Millisecond})
		if !errors.Is(err, proc.ErrNoAck) {
			t.Fatalf("Listen with a spoofed ack: %v, want ErrNoAck", err)
		}
	})
}

// Loss on a Listener whose socket does not see every message (6.6+: the
// kernel filter keeps acknowledgements out): gaps say when, the socket's
// drop counter how many, so other processes' acknowledgements and events
// the kernel never queued (Lose) are not counted as lost.
func TestNextLoss(t *testing.T) {
	f := newFixture(nil)
	l, _ := f.mustListen(t, nil)
	other := f.dial(t, 4)
	defer other.Close()
	f.a.SetSeq(1, 0xFFFFFFFD) // wraps during the test
	var got []string
	next := func(n int) { t.Helper(); got = nextStrings(t, l, got, n) }
	f.emit(t, exec(1, 10)) // baseline for cpu 1
	f.emit(t, exec(1, 11))
	f.a.Drop(1, 3) // reported (ENOBUFS) before the queued events
	next(3)
	f.emit(t, exec(1, 12)) // crosses 2^32
	f.emit(t, exec(0, 13)) // baseline for cpu 0
	sendRequest(t, other, opListen, 9)
	f.a.Lose(0, 1)
	f.emit(t, exec(0, 14)) // a gap of 2, none of it dropped here
	next(4)
	want := []string{
		"lost cpu=? seq=0 lost=unknown",
		"exec cpu=1 seq=4294967293 pid=10",
		"exec cpu=1 seq=4294967294 pid=11",
		"lost cpu=1 seq=4294967295 lost=3",
		"exec cpu=1 seq=2 pid=12",
		"exec cpu=0 seq=2 pid=13", // seq 0 and 1: the acks of the Listener's two requests
		"exec cpu=0 seq=5 pid=14",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	st := l.Stats()
	if st.Lost != 3 || st.Overruns != 1 || st.Events != 5 {
		t.Errorf("Stats %+v, want Lost 3, Overruns 1, Events 5", st)
	}
}

// A socket that sees every message the kernel sends (before 6.6, without a
// socket filter) counts every gap as lost, per CPU.
func TestNextLossExact(t *testing.T) {
	f := newFixture(&proctest.Options{Legacy: true})
	l, err := f.listen(t, &proc.Config{AckTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	f.emit(t, exec(0, 13)) // after the ack: no gap
	f.a.Lose(0, 1)
	f.emit(t, exec(0, 14))
	got = nextStrings(t, l, got, 3)
	want := []string{
		"exec cpu=0 seq=1 pid=13",
		"lost cpu=0 seq=2 lost=1",
		"exec cpu=0 seq=3 pid=14",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st := l.Stats(); st.Lost != 1 {
		t.Errorf("Stats %+v, want Lost 1", st)
	}
}

// Config.ExactLoss on Linux 6.6 and later: the socket keeps the kernel's
// "every message" filter, so other processes' acknowledgements reach it and
// every gap is a loss, also the events the kernel lost before any socket
// (Lose), which nothing else records; the kinds are filtered in user space.
func TestNextExactLoss(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds proc.Kind
		mode  proc.Mode
	}{
		{"all", 0, proc.ModeAll},
		{"exec", proc.KindExec, proc.ModeUserFilter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(nil)
			l, c := f.mustListen(t, &proc.Config{Kinds: tc.kinds, ExactLoss: true})
			if got := l.Mode(); got != tc.mode {
				t.Fatalf("Mode() = %v, want %v", got, tc.mode)
			}
			reqs := f.a.Requests()
			if len(reqs) != 1 || reqs[0].Len != 8 || reqs[0].Kinds != 0 || reqs[0].Op != opListen {
				t.Fatalf("requests %+v, want one 8-byte LISTEN for event type 0 (the kernel's every kind)", reqs)
			}
			if filter, ok := f.a.Filter(c.PortID()); !ok || filter != proc.KindAll {
				t.Fatalf("the kernel's filter for the socket is %v (kept %v), want every kind", filter, ok)
			}
			other := f.dial(t, 4)
			defer other.Close()
			var got []string
			f.emit(t, exec(0, 13))
			sendRequest(t, other, opListen, 9) // its ack reaches the Listener: no gap
			f.a.Lose(0, 2)
			f.emit(t, proc.Event{Kind: proc.KindExit, CPU: 0, PID: 15, TGID: 15})
			f.emit(t, exec(0, 14))
			want := []string{
				"exec cpu=0 seq=1 pid=13",
				"lost cpu=0 seq=3 lost=2",
			}
			if tc.kinds == 0 {
				want = append(want, "exit cpu=0 seq=5 pid=15 parent=0 code=0x0 signal=0")
			}
			want = append(want, "exec cpu=0 seq=6 pid=14")
			got = nextStrings(t, l, got, len(want))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			st := l.Stats()
			if st.Lost != 2 || st.Acks != 2 || st.Overruns != 0 {
				t.Errorf("Stats %+v, want Lost 2, Acks 2 (its own and the other socket's), no overrun", st)
			}
		})
	}
}

// With the kernel filtering by kind, gaps are normal and not losses; after
// an overrun, the socket's drop counter gives the count of what was lost,
// and once it shows no new drop, gaps are left alone again.
func TestNextKernelFilterLoss(t *testing.T) {
	f := newFixture(nil)
	l, c := f.mustListen(t, &proc.Config{Kinds: proc.KindExit})
	reads := 0
	proc.SetDropCounter(l, func() (uint64, error) { reads++; return f.k.Drops(c.PortID()), nil })
	var got []string
	next := func(n int) { t.Helper(); got = nextStrings(t, l, got, n) }
	fork := proc.Event{Kind: proc.KindFork, PID: 9, TGID: 9, ParentPID: 1, ParentTGID: 1}
	f.emit(t, exit(0, 1, 0))
	f.emit(t, fork) // filtered by the kernel: a gap
	f.emit(t, exit(0, 2, 0))
	next(2)
	if reads != 1 {
		t.Errorf("the drop counter was read %d times before any overrun, want once (the baseline)", reads)
	}
	f.a.Drop(0, 5)
	next(1) // the overrun, which also ends the socket's congestion
	f.emit(t, exit(0, 3, 0))
	f.emit(t, fork)
	f.emit(t, exit(0, 4, 0)) // a gap with no new drop: no longer suspect
	f.emit(t, fork)
	f.emit(t, exit(0, 5, 0))
	next(4)
	want := []string{
		"exit cpu=0 seq=2 pid=1 parent=0 code=0x0 signal=17",
		"exit cpu=0 seq=4 pid=2 parent=0 code=0x0 signal=17",
		"lost cpu=? seq=0 lost=unknown",
		"lost cpu=0 seq=5 lost=5",
		"exit cpu=0 seq=10 pid=3 parent=0 code=0x0 signal=17",
		"exit cpu=0 seq=12 pid=4 parent=0 code=0x0 signal=17",
		"exit cpu=0 seq=14 pid=5 parent=0 code=0x0 signal=17",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if reads != 3 {
		t.Errorf("the drop counter was read %d times, want 3 (baseline, the gap after the overrun, the first gap with no new drop)", reads)
	}
	if st := l.Stats(); st.Lost != 5 {
		t.Errorf("Stats %+v, want Lost 5", st)
	}
}

func TestNextUserFilter(t *testing.T) {
	f := newFixture(&proctest.Options{Legacy: true})
	l, err := f.listen(t, &proc.Config{Kinds: proc.KindNonzeroExit | proc.KindComm, AckTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if l.Mode() != proc.ModeUserFilter {
		t.Fatalf("Mode() = %v", l.Mode())
	}
	f.emit(t, proc.Event{Kind: proc.KindFork, PID: 5, TGID: 5, ParentPID: 1, ParentTGID: 1})
	f.emit(t, exit(0, 5, 0))                            // exit 0: filtered
	f.emit(t, exit(0, 6, 0x300))                        // exit 3: delivered
	f.emit(t, proc.Event{Kind: 0x400, PID: 7, TGID: 7}) // unknown kind: filtered
	f.emit(t, proc.Event{Kind: proc.KindComm, PID: 8, TGID: 8, Comm: [16]byte{'h', 'e', 'l', 'l', 'o'}})
	var got []string
	got = nextStrings(t, l, got, 2)
	want := []string{
		"exit cpu=0 seq=3 pid=6 parent=0 code=0x300 signal=17",
		`comm cpu=0 seq=5 pid=8 comm="hello"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st := l.Stats(); st.Filtered != 3 || st.Events != 2 {
		t.Errorf("Stats %+v, want 3 filtered, 2 delivered", st)
	}
}

func TestNextUnknownAndMalformed(t *testing.T) {
	f := newFixture(&proctest.Options{NewKinds: 0x400})
	l, c := f.mustListen(t, nil)
	port := c.PortID()
	kernel := connector.Sender{Group: 1}
	inject := func(from connector.Sender, d []byte) {
		t.Helper()
		if err := f.k.InjectRaw(port, from, d); err != nil {
			t.Fatal(err)
		}
	}
	execPayload := proctest.AppendEvent(nil, &proc.Event{Kind: proc.KindExec, PID: 9, TGID: 9})
	f.emit(t, proc.Event{Kind: 0x400, PID: 7, TGID: 7})
	// A message for another connector id, from the kernel.
	inject(kernel, cntest.MustDatagram(connector.Message{ID: connector.CBID{Idx: 5, Val: 1}, Seq: 1, Data: execPayload}))
	// A userspace sender spoofing a process event: the Conn drops it.
	inject(connector.Sender{Port: 99, Group: 1}, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 1, Data: execPayload}))
	// Too short for its kind: an exec of 20 bytes.
	f.a.EmitPayload(0, execPayload[:20])
	// Too short for any event.
	inject(kernel, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 1000, Data: []byte{1, 2, 3}}))
	// A netlink length beyond the datagram.
	bad := cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 1001, Data: execPayload})
	binary.NativeEndian.PutUint32(bad, 200)
	inject(kernel, bad)
	f.emit(t, exec(0, 8))

	var ev proc.Event
	if err := l.Next(&ev); err != nil || ev.Kind != proc.Kind(0x400) || len(ev.Raw) != proc.EventLen {
		t.Fatalf("Next = %v, %v; want the unknown kind with its payload", &ev, err)
	}
	for i := range 3 {
		err := l.Next(&ev)
		if !errors.Is(err, connector.ErrMalformed) {
			t.Fatalf("malformed message %d: Next = %v, %v; want ErrMalformed", i, &ev, err)
		}
	}
	if err := l.Next(&ev); err != nil || ev.Kind != proc.KindExec || ev.PID != 8 {
		t.Fatalf("Next = %v, %v; want the exec after the malformed messages", &ev, err)
	}
	st := l.Stats()
	if st.Unknown != 1 || st.Malformed != 3 || st.Foreign != 1 || st.Conn.Foreign != 1 {
		t.Errorf("Stats %+v, want 1 unknown, 3 malformed, 1 foreign id, 1 foreign sender", st)
	}
}

// Stats.Foreign counts what the Listener drops; Stats.Conn.Foreign what the
// Conn's sender policy dropped before (as documented on Stats.Foreign).
func TestForeignSenders(t *testing.T) {
	f := newFixture(nil)
	c, err := f.k.Dial(&connector.Config{Groups: []connector.Group{1}}) // SendersDefault
	if err != nil {
		t.Fatal(err)
	}
	l, err := f.listenOn(t, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := cntest.MustDatagram(proctest.Message(&proc.Event{Kind: proc.KindExec, PID: 66, TGID: 66}, 1))
	// A userspace unicast: SendersDefault lets it through, the Listener
	// drops it.
	if err := f.k.InjectRaw(c.PortID(), connector.Sender{Port: 99}, d); err != nil {
		t.Fatal(err)
	}
	// A userspace sender on the kernel's group 1: the Conn drops it.
	if err := f.k.InjectRaw(c.PortID(), connector.Sender{Port: 99, Group: 1}, d); err != nil {
		t.Fatal(err)
	}
	f.emit(t, exec(0, 7))
	var ev proc.Event
	if err := l.Next(&ev); err != nil || ev.PID != 7 {
		t.Fatalf("Next = %v, %v; want the kernel's exec", &ev, err)
	}
	if st := l.Stats(); st.Foreign != 1 || st.Conn.Foreign != 1 {
		t.Errorf("Stats %+v: want Foreign 1 (the unicast spoof) and Conn.Foreign 1 (the group spoof)", st)
	}
}

func TestNextClosed(t *testing.T) {
	f := newFixture(nil)
	l, c := f.mustListen(t, nil)
	done := make(chan error, 1)
	go func() { done <- l.Next(new(proc.Event)) }()
	if !f.k.WaitReceiving(c.PortID(), 5*time.Second) {
		t.Fatal("Next did not block")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, connector.ErrClosed) || !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Next: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Next")
	}
	f.a.SetListeners(1)
	f.emit(t, exec(0, 1))
	if err := l.Next(new(proc.Event)); !errors.Is(err, connector.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}

// TestNextClosedCountsUnread checks that what a closed Listener held and
// never returned is counted: a message held back behind a loss record in
// Stats.Unread, the rest of its Reader's batch in Stats.Conn.Unread.
func TestNextClosedCountsUnread(t *testing.T) {
	t.Run("batch", func(t *testing.T) {
		f := newFixture(nil)
		l, c := f.mustListen(t, nil)
		for pid := range int32(4) {
			f.emit(t, exec(0, 100+pid))
		}
		var ev proc.Event
		if err := l.Next(&ev); err != nil || ev.PID != 100 {
			t.Fatalf("Next = %v, %v; want the exec of pid 100", &ev, err)
		}
		if q := f.k.Queued(c.PortID()); q != 0 {
			t.Fatalf("%d datagrams left in the socket; want all four in the Reader's batch (4)", q)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := l.Next(&ev); !errors.Is(err, connector.ErrClosed) {
				t.Fatalf("Next after Close: %v, want ErrClosed", err)
			}
		}
		if st := l.Stats(); st.Events != 1 || st.Unread != 0 || st.Conn.Unread != 3 {
			t.Errorf("Stats %+v; want Events 1, Unread 0, Conn.Unread 3", st)
		}
	})
	t.Run("read ahead", func(t *testing.T) {
		// Five events queued before the subscription: the handshake
		// keeps two (SetMaxEarly) and counts three past them.
		defer proc.SetMaxEarly(2)()
		f := newFixture(nil)
		f.a.SetListeners(1)
		c := f.dial(t, 4)
		for pid := int32(20); pid < 25; pid++ {
			f.emit(t, exec(0, pid))
		}
		l, err := f.listenOn(t, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Next(new(proc.Event)); !errors.Is(err, connector.ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
		st := l.Stats()
		if st.Events != 0 || st.Unread != 5 || st.Conn.Unread != 0 {
			t.Errorf("Stats %+v; want Events 0, Unread 5 (two kept, three past what the handshake keeps), Conn.Unread 0", st)
		}
	})
	t.Run("held back", func(t *testing.T) {
		f := newFixture(&proctest.Options{Legacy: true})
		l, err := f.listen(t, &proc.Config{AckTimeout: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		f.emit(t, exec(0, 13))
		f.a.Lose(0, 1)
		f.emit(t, exec(0, 14))
		f.emit(t, exec(0, 15))
		got := nextStrings(t, l, nil, 2)
		want := []string{"exec cpu=0 seq=1 pid=13", "lost cpu=0 seq=2 lost=1"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Next(new(proc.Event)); !errors.Is(err, connector.ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
		if st := l.Stats(); st.Events != 1 || st.Lost != 1 || st.Unread != 1 || st.Conn.Unread != 1 {
			t.Errorf("Stats %+v; want Events 1, Lost 1, Unread 1 (pid 14, held back), Conn.Unread 1 (pid 15, in the batch)", st)
		}
	})
}

func TestEvents(t *testing.T) {
	f := newFixture(nil)
	l, err := f.listen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pid := range int32(5) {
		f.emit(t, exec(0, pid))
	}
	var pids []int32
	for ev, err := range l.Events(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, ev.PID)
		if len(pids) == 3 {
			break
		}
	}
	if diff := cmp.Diff([]int32{0, 1, 2}, pids); diff != "" {
		t.Errorf("pids (-want +got):\n%s", diff)
	}

	// Cancellation ends a blocked iteration with ctx.Err().
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last error
	n := 0
	for _, err := range l.Events(ctx) {
		if err != nil {
			last = err
			continue
		}
		if n++; n == 2 {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) || n != 2 {
		t.Errorf("after cancel: %d events, error %v; want 2 and context.Canceled", n, last)
	}
	// An expired context yields its error at once.
	for _, err := range l.Events(ctx) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled context: %v", err)
		}
	}
	// The Listener still works: the interrupting deadline was removed.
	f.emit(t, exec(0, 42))
	var ev proc.Event
	if err := l.Next(&ev); err != nil || ev.PID != 42 {
		t.Fatalf("Next after the iteration = %v, %v", &ev, err)
	}
	// A deadline set by the caller survives an iteration.
	if err := l.SetDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for _, err := range l.Events(context.Background()) {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("iteration past the deadline: %v", err)
		}
	}
	if err := l.Next(&ev); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Next past the deadline: %v", err)
	}
}

func TestNextAllocs(t *testing.T) {
	f := newFixture(nil)
	c := f.dial(t, 16)
	l, err := f.listenOn(t, c, &proc.Config{AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Gaps make Next read the drop counter; that must not allocate either.
	const runs = 200
	for i := range runs + 1 {
		if i%50 == 7 {
			f.a.Lose(0, 2)
		}
		f.emit(t, exit(0, int32(i), 0x100))
	}
	var ev proc.Event
	allocs := testing.AllocsPerRun(runs, func() {
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Next allocates %v times per event, want 0", allocs)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[proc.Mode]string{proc.ModeAll: "all", proc.ModeKernelFilter: "kernel filter", proc.ModeUserFilter: "user-space filter", 0: "Mode(0)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), want)
		}
	}
	if !proc.ModeAll.CountsLoss() || !proc.ModeUserFilter.CountsLoss() || proc.ModeKernelFilter.CountsLoss() {
		t.Error("CountsLoss wrong")
	}
}

// Cancelling an Events iteration wakes its Next with a Flush; whatever the
// timing (the Flush consumed by that Next, or left behind when an event
// came first), a later Next never reports that Flush as ErrFlushed.
func TestEventsCancelLeavesNoFlush(t *testing.T) {
	f := newFixture(nil)
	l, c := f.mustListen(t, nil)
	for i := range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range l.Events(ctx) {
			}
		}()
		if !f.k.WaitReceiving(c.PortID(), 5*time.Second) {
			t.Fatal("the iteration did not wait")
		}
		if i%2 == 0 {
			f.emit(t, exec(0, int32(i))) // an event racing the cancellation
		}
		cancel()
		<-done
		if err := l.SetDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		var ev proc.Event
		for {
			err := l.Next(&ev)
			if err == nil {
				continue // the racing event, if the iteration did not take it
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("trial %d: Next after a cancelled iteration: %v, want the deadline", i, err)
			}
			break
		}
		if err := l.SetDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
}

// NewListener's doc: the Listener takes c over. A second NewListener on the
// same Conn fails at once, sends nothing, and leaves the first one working;
// a Conn whose Listener failed to subscribe can take another.
func TestSecondListenerOnConn(t *testing.T) {
	f := newFixture(nil)
	l, c := f.mustListen(t, nil)
	sent := len(f.k.Requests())
	if _, err := proc.NewListener(c, nil); !errors.Is(err, proc.ErrConnInUse) {
		t.Fatalf("second NewListener on the Conn: %v, want ErrConnInUse", err)
	}
	if n := len(f.k.Requests()); n != sent {
		t.Errorf("the refused NewListener sent %d requests", n-sent)
	}
	f.emit(t, exec(0, 77))
	var ev proc.Event
	if err := l.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.Next(&ev); err != nil || ev.Kind != proc.KindExec || ev.PID != 77 {
		t.Errorf("first Listener after the refusal: %v, %v; want the exec of 77", &ev, err)
	}

	// A NewListener that failed releases its Conn.
	g := newFixture(&proctest.Options{Silent: true})
	c2 := g.dial(t, 4)
	defer c2.Close()
	if _, err := proc.NewListener(c2, &proc.Config{AckTimeout: 20 * time.Millisecond}); errors.Is(err, proc.ErrConnInUse) || err == nil {
		t.Fatalf("NewListener on a silent kernel: %v, want it to fail on its own", err)
	}
	g.a.SetSilent(false)
	l2, err := proc.NewListener(c2, nil)
	if err != nil {
		t.Fatalf("NewListener after a failed one on the same Conn: %v", err)
	}
	l2.Close()
}

// Events the socket received before the handshake's acknowledgement (the
// kernel sends to group 1 while anyone listens) reach the consumer first, in
// order, with no loss counted for the handshake's own acknowledgement.
func TestListenEarlyEvents(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		f := newFixture(&proctest.Options{Legacy: legacy})
		f.a.SetListeners(1) // another process listens
		c := f.dial(t, 4)
		f.emit(t, proc.Event{Kind: proc.KindFork, CPU: 0, PID: 10, TGID: 10, ParentPID: 1, ParentTGID: 1})
		f.emit(t, exec(0, 11))
		f.emit(t, exec(1, 12))
		l, err := f.listenOn(t, c, &proc.Config{AckTimeout: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		f.emit(t, exec(0, 13))
		got := nextStrings(t, l, nil, 4)
		want := []string{
			"fork cpu=0 seq=0 pid=10 parent=1",
			"exec cpu=0 seq=1 pid=11",
			"exec cpu=1 seq=0 pid=12",
			"exec cpu=0 seq=4 pid=13", // seq 2, 3: the acknowledgements of the two requests
		}
		if legacy {
			want[3] = "exec cpu=0 seq=3 pid=13" // one request
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("legacy %v: events (-want +got):\n%s", legacy, diff)
		}
		if st := l.Stats(); st.Lost != 0 || st.Events != 4 || st.Acks != 1 {
			t.Errorf("legacy %v: Stats %+v, want 4 events, its own ack, nothing lost", legacy, st)
		}
	}
}

// An overrun while subscribing reaches the consumer as a loss record, first.
func TestListenEarlyOverrun(t *testing.T) {
	f := newFixture(nil)
	f.a.DropAcks(1) // the first acknowledgement is lost to a full buffer
	l, _ := f.mustListen(t, nil)
	f.emit(t, exec(0, 11))
	got := nextStrings(t, l, nil, 2)
	// Seq 0 to 2: the lost acknowledgement, the one of the request sent
	// again, and the one of the filter. What was dropped while subscribing
	// has no count: it may have been acknowledgements.
	want := []string{"lost cpu=? seq=0 lost=unknown", "exec cpu=0 seq=3 pid=11"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st := l.Stats(); st.Overruns != 1 {
		t.Errorf("Stats %+v, want 1 overrun", st)
	}
}

// Past what the handshake keeps, early events are one loss record with
// their count, and not counted again as a sequence gap, in either mode.
func TestListenEarlyExcess(t *testing.T) {
	defer proc.SetMaxEarly(2)()
	for _, exact := range []bool{false, true} {
		f := newFixture(nil)
		f.a.SetListeners(1)
		c := f.dial(t, 4)
		for pid := int32(20); pid < 25; pid++ {
			f.emit(t, exec(0, pid))
		}
		l, err := f.listenOn(t, c, &proc.Config{ExactLoss: exact})
		if err != nil {
			t.Fatal(err)
		}
		f.emit(t, exec(0, 25))
		got := nextStrings(t, l, nil, 4)
		want := []string{
			"exec cpu=0 seq=0 pid=20",
			"exec cpu=0 seq=1 pid=21",
			"lost cpu=? seq=0 lost=3",
			"exec cpu=0 seq=7 pid=25", // seq 5, 6: the acknowledgements of the probe and the filter
		}
		if exact {
			want[3] = "exec cpu=0 seq=6 pid=25" // no filter request
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("exact %v: events (-want +got):\n%s", exact, diff)
		}
		if st := l.Stats(); st.Lost != 3 {
			t.Errorf("exact %v: Stats %+v, want Lost 3", exact, st)
		}
	}
}

// What uname tells decides where it can. Before 6.6 the filter request goes
// out without a wait and the classic one after it: a kernel without the
// filter costs no AckTimeout, and one with it (a vendor's backport) gets the
// kernel filter. From 6.6 on, a missing acknowledgement is a wait too
// short, never the pre-6.6 path.
func TestListenKernelVersion(t *testing.T) {
	t.Run("before 6.6 without the filter", func(t *testing.T) {
		defer proc.SetKernelVersion(true)()
		f := newFixture(&proctest.Options{Legacy: true})
		l, _ := f.mustListen(t, &proc.Config{Kinds: proc.KindExec, AckTimeout: time.Hour})
		if got := l.Mode(); got != proc.ModeUserFilter {
			t.Errorf("Mode() = %v, want %v", got, proc.ModeUserFilter)
		}
		reqs := f.a.Requests()
		if len(reqs) != 2 || reqs[0].Len != 8 || reqs[0].Answered || reqs[1].Len != 4 || !reqs[1].Answered {
			t.Errorf("requests %+v, want the 8-byte one (unanswered), then the 4-byte one", reqs)
		}
		f.emit(t, exec(0, 7))
		if got := nextStrings(t, l, nil, 1); got[0] != "exec cpu=0 seq=1 pid=7" {
			t.Errorf("event %q, want the exec", got[0])
		}
	})
	t.Run("before 6.6 with the filter", func(t *testing.T) {
		defer proc.SetKernelVersion(true)()
		f := newFixture(nil)
		l, c := f.mustListen(t, &proc.Config{Kinds: proc.KindExec, AckTimeout: time.Hour})
		if got := l.Mode(); got != proc.ModeKernelFilter {
			t.Errorf("Mode() = %v, want %v", got, proc.ModeKernelFilter)
		}
		if filter, _ := f.a.Filter(c.PortID()); filter != proc.KindExec {
			t.Errorf("the kernel's filter is %v, want %v", filter, proc.KindExec)
		}
		f.emit(t, proc.Event{Kind: proc.KindFork, CPU: 0, PID: 6, TGID: 6})
		f.emit(t, exec(0, 7))
		if got := nextStrings(t, l, nil, 1); got[0] != "exec cpu=0 seq=4 pid=7" {
			t.Errorf("event %q, want the exec", got[0])
		}
		if st := l.Stats(); st.Acks != 2 || st.Lost != 0 {
			t.Errorf("Stats %+v, want its 2 acks, nothing lost", st)
		}
	})
	t.Run("6.6 with no acknowledgement in time", func(t *testing.T) {
		defer proc.SetKernelVersion(false)()
		defer proc.SetNamespaceCheck(func() error { return nil })()
		f := newFixture(nil)
		f.a.DropAcks(3) // every try's acknowledgement lost
		l, c := f.mustListen(t, &proc.Config{Kinds: proc.KindExec, AckTimeout: 10 * time.Millisecond})
		if got := l.Mode(); got != proc.ModeKernelFilter {
			t.Errorf("Mode() = %v, want %v", got, proc.ModeKernelFilter)
		}
		if filter, _ := f.a.Filter(c.PortID()); filter != proc.KindExec {
			t.Errorf("the kernel's filter is %v, want %v", filter, proc.KindExec)
		}
	})
}

// CheckEvents tells a kernel that generates events from one whose listener
// count fell below 1 (which no event stream shows), and Rearm turns events
// back on without changing the Listener's subscription.
func TestCheckEventsRearm(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		f := newFixture(&proctest.Options{Legacy: legacy})
		l, c := f.mustListen(t, &proc.Config{Kinds: proc.KindExec, AckTimeout: 20 * time.Millisecond})
		probe := f.dial(t, 4)
		defer probe.Close()
		check := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			return proc.CheckEvents(ctx, probe)
		}
		if err := check(); err != nil {
			t.Fatalf("legacy %v: CheckEvents with a listener: %v", legacy, err)
		}
		f.a.SetListeners(-5) // as after an IGNORE too many, six times
		if err := check(); !errors.Is(err, proc.ErrEventsOff) {
			t.Fatalf("legacy %v: CheckEvents with the count at 0: %v, want ErrEventsOff", legacy, err)
		}
		if _, _, ok := f.a.Emit(exec(0, 5)); ok {
			t.Fatalf("legacy %v: the fake kernel generated an event with the count at 0", legacy)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Rearm(ctx, probe); err != nil {
			t.Fatal(err)
		}
		// Batches of 1, 2 and 4 steps: -5 + 7.
		if n := f.a.Listeners(); n != 2 {
			t.Errorf("legacy %v: listener count %d after Rearm, want 2", legacy, n)
		}
		if !legacy {
			if filter, _ := f.a.Filter(c.PortID()); filter != proc.KindExec {
				t.Errorf("the kernel's filter is %v after Rearm, want %v", filter, proc.KindExec)
			}
		}
		if err := check(); err != nil {
			t.Fatalf("legacy %v: CheckEvents after Rearm: %v", legacy, err)
		}
		f.emit(t, exec(0, 6))
		var ev proc.Event
		for ev.Kind != proc.KindExec {
			if err := l.Next(&ev); err != nil {
				t.Fatal(err)
			}
			if ev.Kind == proc.KindLost {
				t.Errorf("legacy %v: %v, want no loss", legacy, &ev)
			}
		}
		if ev.PID != 6 {
			t.Errorf("legacy %v: %v, want the exec of 6", legacy, &ev)
		}
		l.Close()
		if err := l.Rearm(ctx, probe); !errors.Is(err, connector.ErrClosed) {
			t.Errorf("Rearm after Close: %v, want ErrClosed", err)
		}
	}
}
