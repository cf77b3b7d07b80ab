package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/google/go-cmp/cmp"
)

// request describes a subscription request: op and, for the 8-byte form,
// the filter.
type request struct {
	Op    uint32
	Kinds Kind
	Input bool
}

func decodeRequests(t *testing.T, raw [][]byte) []request {
	t.Helper()
	var rs []request
	for _, b := range raw {
		switch len(b) {
		case 4:
			rs = append(rs, request{Op: binary.NativeEndian.Uint32(b)})
		case 8:
			rs = append(rs, request{Op: binary.NativeEndian.Uint32(b), Kinds: Kind(binary.NativeEndian.Uint32(b[4:])), Input: true})
		default:
			t.Fatalf("request of %d bytes: %x", len(b), b)
		}
	}
	return rs
}

func TestListenHandshake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		procInput bool
		kinds     Kind
		mode      Mode
		requests  []request
	}{
		{"unfiltered", true, 0, ModeAll, []request{{Op: opListen}}},
		{"KindAll is unfiltered", true, KindAll, ModeAll, []request{{Op: opListen}}},
		{"unfiltered before 6.6", false, 0, ModeAll, []request{{Op: opListen}}},
		{"kernel filter", true, KindExec | KindExit, ModeKernelFilter, []request{
			{Op: opListen, Kinds: KindAll, Input: true},
			{Op: opListen, Kinds: KindExec | KindExit, Input: true},
		}},
		{"nonzero exit filter", true, KindNonzeroExit, ModeKernelFilter, []request{
			{Op: opListen, Kinds: KindAll, Input: true},
			{Op: opListen, Kinds: KindNonzeroExit, Input: true},
		}},
		{"fallback before 6.6", false, KindExec, ModeUserFilter, []request{
			{Op: opListen, Kinds: KindAll, Input: true},
			{Op: opListen},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel()
			k.procInput = tc.procInput
			l, err := k.listen(t, &Config{Kinds: tc.kinds})
			if err != nil {
				t.Fatal(err)
			}
			if l.Mode() != tc.mode {
				t.Errorf("Mode() = %v, want %v", l.Mode(), tc.mode)
			}
			if diff := cmp.Diff(tc.requests, decodeRequests(t, k.requestList())); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			want := append(tc.requests, request{Op: opIgnore})
			if diff := cmp.Diff(want, decodeRequests(t, k.requestList())); diff != "" {
				t.Errorf("requests after Close (-want +got):\n%s", diff)
			}
			if err := l.Close(); !errors.Is(err, connector.ErrClosed) {
				t.Errorf("second Close: %v, want ErrClosed", err)
			}
			if n := len(k.requestList()); n != len(want) {
				t.Errorf("second Close sent another request (%d in all)", n)
			}
		})
	}
}

func TestListenNonce(t *testing.T) {
	k := newFakeKernel()
	// Other clients' acknowledgements, and an event, arrive first.
	k.push(fakeDgram{b: kernelDatagram(connector.IDProc, 7, 1, payload(KindNone, 0, 1, 0))})
	k.push(fakeDgram{b: kernelDatagram(connector.IDProc, 8, 0x12345679, payload(KindNone, 0, 1, uint32(syscall.EPERM)))})
	k.emit(KindFork, 1, 1, 1, 2, 2)
	l, err := k.listen(t, nil)
	if err != nil {
		t.Fatalf("Listen with other clients' acks queued: %v", err)
	}
	if got := l.Stats().Acks; got != 3 {
		t.Errorf("Stats().Acks = %d, want 3", got)
	}
	if k.reqAcks[0] == 0 && k.reqAcks[0]+1 == 1 {
		t.Log("nonce 0 drawn")
	}
	// Acks after the subscription are skipped by Next.
	k.push(fakeDgram{b: kernelDatagram(connector.IDProc, 9, 5, payload(KindNone, 0, 1, 0))})
	k.emit(KindExec, 1, 3, 3)
	var ev Event
	if err := l.Next(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != KindExec || ev.PID != 3 {
		t.Errorf("Next = %v, want the exec", &ev)
	}
}

func TestListenErrors(t *testing.T) {
	defer func(f func() error) { namespaceCheck = f }(namespaceCheck)
	namespaceCheck = func() error { return nil }

	t.Run("no ack", func(t *testing.T) {
		k := newFakeKernel()
		k.silent = true
		start := time.Now()
		_, err := k.listen(t, &Config{AckTimeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrNoAck) {
			t.Fatalf("Listen: %v, want ErrNoAck", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Listen took %v", d)
		}
	})
	t.Run("namespace", func(t *testing.T) {
		namespaceCheck = func() error { return ErrNamespace }
		defer func() { namespaceCheck = func() error { return nil } }()
		k := newFakeKernel()
		k.silent = true
		_, err := k.listen(t, &Config{Kinds: KindExit, AckTimeout: 20 * time.Millisecond})
		if !errors.Is(err, ErrNamespace) {
			t.Fatalf("Listen: %v, want ErrNamespace", err)
		}
	})
	t.Run("permission", func(t *testing.T) {
		k := newFakeKernel()
		k.procInput = false
		k.ackErr = uint32(syscall.EPERM)
		_, err := k.listen(t, &Config{Kinds: KindExit, AckTimeout: 20 * time.Millisecond})
		if !errors.Is(err, os.ErrPermission) || !errors.Is(err, syscall.EPERM) {
			t.Fatalf("Listen: %v, want a permission error", err)
		}
	})
	t.Run("ack error", func(t *testing.T) {
		k := newFakeKernel()
		k.ackErr = uint32(syscall.ENOMEM)
		_, err := k.listen(t, nil)
		if !errors.Is(err, syscall.ENOMEM) {
			t.Fatalf("Listen: %v, want ENOMEM", err)
		}
	})
	t.Run("ack lost to overrun", func(t *testing.T) {
		k := newFakeKernel()
		k.dropAcks = 1
		l, err := k.listen(t, nil)
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		if n := len(k.requestList()); n != 2 {
			t.Errorf("%d requests, want 2 (one resent after the overrun)", n)
		}
		if st := l.Stats(); st.Overruns != 1 {
			t.Errorf("Stats %+v, want 1 overrun", st)
		}
	})
	t.Run("not the kernel", func(t *testing.T) {
		// A spoofed acknowledgement from a userspace port does not count.
		k := newFakeKernel()
		k.silent = true
		c := k.conn(t, 4)
		defer c.Close()
		go func() {
			for {
				k.mu.Lock()
				n := len(k.reqAcks)
				k.mu.Unlock()
				if n > 0 {
					k.push(fakeDgram{port: 77, b: kernelDatagram(connector.IDProc, 1, k.reqAcks[0]+1, payload(KindNone, 0, 1, 0))})
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		_, err := listenConn(c, &Config{AckTimeout: 100 * time.Millisecond})
		if !errors.Is(err, ErrNoAck) {
			t.Fatalf("Listen with a spoofed ack: %v, want ErrNoAck", err)
		}
	})
}

func TestNextLoss(t *testing.T) {
	k := newFakeKernel()
	k.seq[1] = 0xFFFFFFFD // wraps during the test
	l, err := k.listen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.emit(KindExec, 1, 10, 10) // baseline for cpu 1
	k.emit(KindExec, 1, 11, 11)
	k.lose(1, 3, true)
	k.emit(KindExec, 1, 12, 12) // crosses 2^32
	k.emit(KindExec, 0, 13, 13) // cpu 0 after the ack
	k.lose(0, 1, false)
	k.emit(KindExec, 0, 14, 14)

	var got []string
	var ev Event
	for range 8 {
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.String())
	}
	want := []string{
		"exec cpu=1 seq=4294967293 pid=10",
		"exec cpu=1 seq=4294967294 pid=11",
		"lost cpu=? seq=0 lost=unknown",
		"lost cpu=1 seq=4294967295 lost=3",
		"exec cpu=1 seq=2 pid=12",
		"exec cpu=0 seq=1 pid=13",
		"lost cpu=0 seq=2 lost=1",
		"exec cpu=0 seq=3 pid=14",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	st := l.Stats()
	if st.Lost != 4 || st.Overruns != 1 || st.Events != 5 {
		t.Errorf("Stats %+v, want Lost 4, Overruns 1, Events 5", st)
	}
}

func TestNextKernelFilterNoGaps(t *testing.T) {
	k := newFakeKernel()
	l, err := k.listen(t, &Config{Kinds: KindExit})
	if err != nil {
		t.Fatal(err)
	}
	k.emit(KindExit, 0, 1, 1, 0, 17)
	k.emit(KindFork, 0, 1, 1, 2, 2) // filtered by the kernel: a gap
	k.emit(KindExit, 0, 2, 2, 0, 17)
	k.lose(0, 5, true)
	k.emit(KindExit, 0, 3, 3, 0, 17)
	var kinds []Kind
	var ev Event
	for range 4 {
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Kind)
		if ev.Kind == KindLost && ev.Lost != 0 {
			t.Errorf("filtered listener counted a loss: %v", &ev)
		}
	}
	if diff := cmp.Diff([]Kind{KindExit, KindExit, KindLost, KindExit}, kinds); diff != "" {
		t.Errorf("kinds (-want +got):\n%s", diff)
	}
}

func TestNextUserFilter(t *testing.T) {
	k := newFakeKernel()
	k.procInput = false
	l, err := k.listen(t, &Config{Kinds: KindNonzeroExit | KindComm, AckTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if l.Mode() != ModeUserFilter {
		t.Fatalf("Mode() = %v", l.Mode())
	}
	k.emit(KindFork, 0, 1, 1, 5, 5)
	k.emit(KindExit, 0, 5, 5, 0, 17)            // exit 0: filtered
	k.emit(KindExit, 0, 6, 6, 0x300, 17)        // exit 3: delivered
	k.emit(Kind(0x400), 0, 7, 7)                // unknown kind: filtered
	k.emit(KindComm, 0, 8, 8, 0x6c6c6568, 0x6f) // "hello"
	var got []string
	var ev Event
	for range 2 {
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.String())
	}
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
	k := newFakeKernel()
	l, err := k.listen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.emit(Kind(0x400), 0, 7, 7)
	// A message for another connector id, from the kernel.
	k.push(fakeDgram{b: kernelDatagram(connector.CBID{Idx: 5, Val: 1}, 1, 0, payload(KindExec, 0, 1, 1, 1))})
	// A userspace sender spoofing a process event.
	k.push(fakeDgram{port: 99, b: kernelDatagram(connector.IDProc, 1, 0, payload(KindExec, 0, 1, 66, 66))})
	// Too short for its kind: an exec of 20 bytes.
	k.push(fakeDgram{b: kernelDatagram(connector.IDProc, k.nextSeq(0), 0, payload(KindExec, 0, 1, 9, 9)[:20])})
	// Too short for any event.
	k.push(fakeDgram{b: kernelDatagram(connector.IDProc, 1000, 0, []byte{1, 2, 3})})
	// A netlink length beyond the datagram.
	bad := kernelDatagram(connector.IDProc, 1001, 0, payload(KindExec, 0, 1, 9, 9))
	binary.NativeEndian.PutUint32(bad, 200)
	k.push(fakeDgram{b: bad})
	k.emit(KindExec, 0, 8, 8)

	var ev Event
	if err := l.Next(&ev); err != nil || ev.Kind != Kind(0x400) || len(ev.Raw) != eventLen {
		t.Fatalf("Next = %v, %v; want the unknown kind with its payload", &ev, err)
	}
	for i := range 3 {
		err := l.Next(&ev)
		if !errors.Is(err, connector.ErrMalformed) {
			t.Fatalf("malformed message %d: Next = %v, %v; want ErrMalformed", i, &ev, err)
		}
	}
	if err := l.Next(&ev); err != nil || ev.Kind != KindExec || ev.PID != 8 {
		t.Fatalf("Next = %v, %v; want the exec after the malformed messages", &ev, err)
	}
	st := l.Stats()
	if st.Unknown != 1 || st.Malformed != 3 || st.Foreign != 1 || st.Conn.Foreign != 1 {
		t.Errorf("Stats %+v, want 1 unknown, 3 malformed, 1 foreign id, 1 foreign sender", st)
	}
}

func TestNextClosed(t *testing.T) {
	k := newFakeKernel()
	l, err := k.listen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Next(new(Event)) }()
	time.Sleep(10 * time.Millisecond) // let Next block; it must return either way
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
	k.emit(KindExec, 0, 1, 1)
	if err := l.Next(new(Event)); !errors.Is(err, connector.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestEvents(t *testing.T) {
	k := newFakeKernel()
	l, err := k.listen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pid := range uint32(5) {
		k.emit(KindExec, 0, pid, pid)
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
	k.emit(KindExec, 0, 42, 42)
	var ev Event
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
	k := newFakeKernel()
	c := k.conn(t, 16)
	l, err := listenConn(c, &Config{AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const runs = 200
	for i := range runs + 1 {
		if i%50 == 7 {
			k.lose(0, 2, false)
		}
		k.emit(KindExit, 0, uint32(i), uint32(i), 0x100, 17)
	}
	var ev Event
	allocs := testing.AllocsPerRun(runs, func() {
		if err := l.Next(&ev); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Next allocates %v times per event, want 0", allocs)
	}
}

func TestSeqTracker(t *testing.T) {
	var s seqTracker
	s.init()
	type step struct {
		cpu, seq uint32
		lost     uint32
		ooo      bool
	}
	for i, st := range []step{
		{0, 100, 0, false},
		{0, 101, 0, false},
		{0, 105, 3, false},
		{0, 105, 0, true}, // duplicate
		{0, 90, 0, true},  // older
		{0, 106, 0, false},
		{3000, 0xFFFFFFFF, 0, false}, // a CPU beyond the initial table
		{3000, 1, 1, false},          // wraps: 0 was lost
		{CPUUnknown, 5, 0, false},    // old kernels' acks: ignored
		{CPUUnknown, 9, 0, false},
	} {
		lost, ooo := s.observe(st.cpu, st.seq)
		if lost != st.lost || ooo != st.ooo {
			t.Errorf("step %d %+v: got lost %d, out of order %v", i, st, lost, ooo)
		}
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{ModeAll: "all", ModeKernelFilter: "kernel filter", ModeUserFilter: "user-space filter", 0: "Mode(0)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), want)
		}
	}
	if !ModeAll.CountsLoss() || !ModeUserFilter.CountsLoss() || ModeKernelFilter.CountsLoss() {
		t.Error("CountsLoss wrong")
	}
}
