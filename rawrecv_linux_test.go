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
)

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
	for _, kw := range []bool{false, true} {
		t.Run("KernelWait="+strconv.FormatBool(kw), func(t *testing.T) {
			rx, err := connector.Dial(&connector.Config{BatchSize: batch, KernelWait: kw})
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
			blocked := func() bool { return ioWaiters("TestIntegrationAfterFullBatch") == 1 }
			if kw {
				blocked = func() bool { return kernelWaiters("TestIntegrationAfterFullBatch") == 1 }
			}
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
	for _, kw := range []bool{false, true} {
		t.Run("KernelWait="+strconv.FormatBool(kw), func(t *testing.T) {
			rx := dial(t, &connector.Config{KernelWait: kw, ReadBufferSize: 8 << 20, BatchSize: 64})
			tx := dial(t, nil)
			id := testID()
			r := rx.NewReader()
			defer r.Release()
			pingPong := func() <-chan struct{} {
				done := make(chan struct{})
				go func() {
					defer close(done)
					ping, pong := make(chan int), make(chan int)
					go func() {
						for v := range ping {
							pong <- v + 1
						}
					}()
					for i := range 10000 {
						ping <- i
						if <-pong != i+1 {
							panic("pong")
						}
					}
					close(ping)
				}()
				return done
			}

			// The Reader waits (nothing queued) with no deadline near.
			got := make(chan error, 1)
			go func() {
				m, _, err := r.Next()
				if err == nil && (m.ID != id || m.Seq != 0) {
					err = errors.New("wrong message")
				}
				got <- err
			}()
			blocked := func() bool { return ioWaiters("TestIntegrationOneProcessor") == 1 }
			if kw {
				blocked = func() bool { return kernelWaiters("TestIntegrationOneProcessor") == 1 }
			}
			if !waitUntil(blocked) {
				t.Fatal("Next did not block waiting for a datagram")
			}
			select {
			case <-pingPong():
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
			case <-pingPong():
			case <-time.After(waitTimeout):
				t.Fatal("another goroutine made no progress while the Reader drained")
			}
			awaitErr(t, got, waitTimeout, nil, "the drain")
		})
	}
}
