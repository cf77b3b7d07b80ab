package connector_test

// The receive path's system calls: a receive that cannot wait (MSG_DONTWAIT)
// is a raw system call that keeps the goroutine's processor, and a
// KernelWait receive after a full batch tries one before it waits in the
// kernel (internal/transport, Mmsg.recv and Mmsg.RecvWait). These tests
// check that the contracts hold across that switch: a receive after a full
// batch still waits, honours its deadline and Close, and other goroutines
// keep running beside a waiting or draining Reader at GOMAXPROCS=1.

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

// A waitMode is one way a Conn's receives wait: in the runtime poller,
// in recvmmsg (Config.KernelWait), or in a raw recvmmsg (Config.RawWait).
type waitMode struct {
	name        string
	kernel, raw bool
}

var waitModes = []waitMode{{"poller", false, false}, {"KernelWait", true, false}, {"RawWait", true, true}}

func (w waitMode) config(cfg connector.Config) *connector.Config {
	cfg.KernelWait, cfg.RawWait = w.kernel, w.raw
	return &cfg
}

// blocked reports whether one receive of a goroutine with fn in its stack
// waits (or, for a raw wait, which a goroutine dump shows only as running,
// is about to) for a datagram in this mode. A RawWait receive waits as a
// KernelWait one does when the process has no P to spare (GOMAXPROCS=1,
// as in a one-CPU guest of the kernel matrix).
func (w waitMode) blocked(fn string) func() bool {
	switch {
	case w.raw:
		return func() bool { return connector.RawWaitersForTest()+int32(kernelWaiters(fn)) == 1 }
	case w.kernel:
		return func() bool { return kernelWaiters(fn) == 1 }
	}
	return func() bool { return ioWaiters(fn) == 1 }
}

// queueMessages queues n messages of id for rx, seq from..from+n-1.
func queueMessages(t *testing.T, tx, rx *connector.Conn, id connector.CBID, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(40, byte(i))}); err != nil {
			t.Fatal(err)
		}
	}
}

// readSeqs reads n messages from r and checks they are id's seq from..from+n-1.
func readSeqs(t *testing.T, r *connector.Reader, id connector.CBID, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		m, _, err := r.Next()
		if err != nil {
			t.Fatalf("Next, message %d: %v", i, err)
		}
		if m.ID != id || m.Seq != uint32(i) {
			t.Fatalf("Next: %v seq %d, want %v seq %d", m.ID, m.Seq, id, i)
		}
	}
}

// TestIntegrationAfterFullBatch reads exactly whole batches, so that the
// next receive is the one that first tries without waiting, and checks that
// it then waits: for its deadline, for a new message, and for Close.
func TestIntegrationAfterFullBatch(t *testing.T) {
	requirePrivileged(t)
	const batch = 4
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			rx, err := connector.Dial(mode.config(connector.Config{BatchSize: batch}))
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			tx := dial(t, nil)
			id := testID()
			r := rx.NewReader()
			defer r.Release()
			if err := rx.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
				t.Fatal(err)
			}
			queueMessages(t, tx, rx, id, 0, 2*batch)
			readSeqs(t, r, id, 0, 2*batch)

			// The queue is empty now: the receive must wait for the
			// deadline, not return an empty batch or an error.
			if err := rx.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if m, _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Next on an empty queue after a full batch: %v seq %d, %v; want os.ErrDeadlineExceeded", m.ID, m.Seq, err)
			}

			// A message that arrives while it waits is returned.
			if err := rx.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
				t.Fatal(err)
			}
			queueMessages(t, tx, rx, id, 2*batch, batch)
			readSeqs(t, r, id, 2*batch, batch)
			done := make(chan error, 1)
			go func() {
				m, _, err := r.Next()
				if err == nil && (m.ID != id || m.Seq != 3*batch) {
					err = errors.New("wrong message: seq " + strconv.Itoa(int(m.Seq)))
				}
				done <- err
			}()
			blocked := mode.blocked("TestIntegrationAfterFullBatch")
			if !waitUntil(blocked) {
				t.Fatal("Next after a full batch did not block waiting for a datagram")
			}
			queueMessages(t, tx, rx, id, 3*batch, 1)
			awaitErr(t, done, promptly, nil, "Next woken by a message")

			// Close unblocks a receive that follows a full batch.
			queueMessages(t, tx, rx, id, 3*batch+1, batch)
			readSeqs(t, r, id, 3*batch+1, batch)
			go func() { _, _, err := r.Next(); done <- err }()
			if !waitUntil(blocked) {
				t.Fatal("Next after a full batch did not block waiting for a datagram")
			}
			if err := rx.Close(); err != nil {
				t.Fatal(err)
			}
			awaitErr(t, done, promptly, connector.ErrClosed, "Next after Close")
		})
	}
}

// waitUntil polls cond for up to waitTimeout.
func waitUntil(cond func() bool) bool {
	for end := time.Now().Add(waitTimeout); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestIntegrationOneProcessor runs a Reader at GOMAXPROCS=1 beside another
// goroutine that needs the processor (channel round trips with a third):
// while the Reader waits for a datagram, and while it drains a long queue,
// whose receives then do not wait (raw system calls). The other goroutine
// must finish its work: a receive that held the only processor while
// waiting, with nothing to interrupt it, would stop it for good. (One that
// held it for a bounded slice would only slow it down, which no test
// without timing can tell.)
func TestIntegrationOneProcessor(t *testing.T) {
	requirePrivileged(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const queued = 2000
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			rx := dial(t, mode.config(connector.Config{ReadBufferSize: 8 << 20, BatchSize: 64}))
			tx := dial(t, nil)
			id := testID()
			r := rx.NewReader()
			defer r.Release()

			// The Reader waits (nothing queued) with no deadline near.
			got := make(chan error, 1)
			go func() {
				m, _, err := r.Next()
				if err == nil && (m.ID != id || m.Seq != 0) {
					err = errors.New("wrong message")
				}
				got <- err
			}()
			blocked := mode.blocked("TestIntegrationOneProcessor")
			if mode.raw {
				// At GOMAXPROCS=1 a RawWait receive waits as a
				// KernelWait one does (a Conn reads GOMAXPROCS at
				// its first wait).
				blocked = func() bool {
					return connector.RawWaitersForTest() == 0 && kernelWaiters("TestIntegrationOneProcessor") == 1
				}
			}
			if !waitUntil(blocked) {
				t.Fatal("Next did not block waiting for a datagram")
			}
			select {
			case <-pingPong(10000):
			case err := <-got:
				t.Fatalf("Next returned %v before its message was sent", err)
			case <-time.After(waitTimeout):
				t.Fatal("another goroutine made no progress while the Reader waited for a datagram")
			}
			queueMessages(t, tx, rx, id, 0, 1)
			awaitErr(t, got, promptly, nil, "Next")

			// The Reader drains a long queue while the other goroutine
			// works.
			queueMessages(t, tx, rx, id, 1, queued)
			go func() {
				for i := 1; i <= queued; i++ {
					m, _, err := r.Next()
					if err == nil && (m.ID != id || m.Seq != uint32(i)) {
						err = errors.New("message out of order: seq " + strconv.Itoa(int(m.Seq)))
					}
					if err != nil {
						got <- err
						return
					}
				}
				got <- nil
			}()
			select {
			case <-pingPong(10000):
			case <-time.After(waitTimeout):
				t.Fatal("another goroutine made no progress while the Reader drained")
			}
			awaitErr(t, got, waitTimeout, nil, "the drain")
		})
	}
}

func TestRawWaitNeedsKernelWait(t *testing.T) {
	_, err := connector.Dial(&connector.Config{RawWait: true})
	if !errors.Is(err, connector.ErrInvalidConfig) {
		t.Fatalf("Dial with RawWait and without KernelWait: %v, want ErrInvalidConfig", err)
	}
}

// TestIntegrationRawWaitLimit checks that at most GOMAXPROCS-1 RawWait
// receives wait raw at once, here one of two, the other waiting as a
// KernelWait receive does; that other goroutines run meanwhile; and that
// Close ends both waits. It needs no privilege: the Conns join no group
// and nothing is sent.
func TestIntegrationRawWaitLimit(t *testing.T) {
	testutil.RequireConnector(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	const fn = "TestIntegrationRawWaitLimit"
	done := make(chan error, 2)
	var conns []*connector.Conn
	for range 2 {
		c := dial(t, &connector.Config{KernelWait: true, RawWait: true})
		conns = append(conns, c)
		r := c.NewReader()
		defer r.Release()
		go func() { _, _, err := r.Next(); done <- err }()
	}
	if !waitUntil(func() bool { return connector.RawWaitersForTest() == 1 && kernelWaiters(fn) == 1 }) {
		t.Fatalf("with GOMAXPROCS=2, %d raw waits and %d ordinary ones; want one of each", connector.RawWaitersForTest(), kernelWaiters(fn))
	}
	ping := make(chan int)
	go func() {
		for i := range 10000 {
			ping <- i
		}
		close(ping)
	}()
	n := 0
	for range ping {
		n++
	}
	if n != 10000 {
		t.Fatalf("%d values passed, want 10000", n)
	}
	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		awaitErr(t, done, promptly, connector.ErrClosed, "Next after Close")
	}
	if got := connector.RawWaitersForTest(); got != 0 {
		t.Errorf("%d raw waits after Close, want 0", got)
	}
}

// TestIntegrationRawWaitReadsGOMAXPROCS: a Conn's first wait reads
// GOMAXPROCS, so that a limit cached under another GOMAXPROCS (at the
// package's init, before the program set its own, or by another Conn) does
// not let a new Conn wait raw where the process has no P to spare. It needs
// no privilege.
func TestIntegrationRawWaitReadsGOMAXPROCS(t *testing.T) {
	testutil.RequireConnector(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	defer connector.SetRawWaitLimitForTest(connector.RawWaitLimitForTest())
	connector.SetRawWaitLimitForTest(8) // as cached at GOMAXPROCS=9
	const fn = "TestIntegrationRawWaitReadsGOMAXPROCS"
	c := dial(t, &connector.Config{KernelWait: true, RawWait: true})
	r := c.NewReader()
	defer r.Release()
	done := make(chan error, 1)
	go func() { _, _, err := r.Next(); done <- err }()
	if !waitUntil(func() bool { return connector.RawWaitersForTest() == 1 || kernelWaiters(fn) == 1 }) {
		t.Fatal("Next did not wait for a datagram")
	}
	if got := connector.RawWaitLimitForTest(); got != 1 {
		t.Errorf("limit of raw waits %d after a new Conn's first wait at GOMAXPROCS=2, want 1", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	awaitErr(t, done, promptly, connector.ErrClosed, "Next after Close")
}
