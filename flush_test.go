package connector_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// receiveOne is one receive tier reduced to "the next message's seq, or an
// error", for the Flush tests that run on both tiers.
type receiveOne func() (uint32, error)

func fakeTiers(c *connector.Conn) map[string]func(t *testing.T) receiveOne {
	return map[string]func(t *testing.T) receiveOne{
		"Reader": func(t *testing.T) receiveOne {
			r := c.NewReader()
			t.Cleanup(r.Release)
			return func() (uint32, error) {
				m, _, err := r.Next()
				return m.Seq, err
			}
		},
		"Receive": func(*testing.T) receiveOne {
			return func() (uint32, error) {
				msgs, _, err := c.Receive()
				if err != nil {
					return 0, err
				}
				if len(msgs) != 1 {
					return 0, fmt.Errorf("Receive returned %d messages, want 1", len(msgs))
				}
				return msgs[0].Seq, nil
			}
		},
	}
}

func injectSeq(t *testing.T, k *cntest.Kernel, c *connector.Conn, seq uint32) {
	t.Helper()
	inject(t, k, c, connector.Sender{}, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: seq}))
}

// TestFlushWakesBlockedReceive: a receive blocked on an empty queue returns
// ErrFlushed promptly after Flush, and the next receive blocks again until
// a message arrives.
func TestFlushWakesBlockedReceive(t *testing.T) {
	for _, name := range []string{"Reader", "Receive"} {
		t.Run(name, func(t *testing.T) {
			k := cntest.New(nil)
			c := dialFake(t, k, nil)
			next := fakeTiers(c)[name](t)
			errc := make(chan error, 1)
			go func() { _, err := next(); errc <- err }()
			if !k.WaitReceiving(c.PortID(), fakeWait) {
				t.Fatal("the receive never blocked")
			}
			if err := c.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, connector.ErrFlushed) || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("blocked receive after Flush = %v, want ErrFlushed", err)
				}
				mustContain(t, err, "connector: receive: flushed")
			case <-time.After(fakeWait):
				t.Fatal("Flush did not wake the blocked receive")
			}
			// Receives block again: the next one waits for the message.
			seqc := make(chan uint32, 1)
			go func() {
				seq, err := next()
				if err != nil {
					t.Errorf("receive after ErrFlushed: %v", err)
				}
				seqc <- seq
			}()
			if !k.WaitReceiving(c.PortID(), fakeWait) {
				t.Fatal("the receive after ErrFlushed did not block")
			}
			injectSeq(t, k, c, 7)
			if seq := <-seqc; seq != 7 {
				t.Errorf("got seq %d, want 7", seq)
			}
		})
	}
}

// TestFlushDrainsQueue: after Flush, receives return what is queued without
// blocking, then ErrFlushed once, then block again (here until the
// caller's own deadline, which Flush left in place).
func TestFlushDrainsQueue(t *testing.T) {
	for _, name := range []string{"Reader", "Receive"} {
		t.Run(name, func(t *testing.T) {
			k := cntest.New(nil)
			c := dialFake(t, k, nil)
			next := fakeTiers(c)[name](t)
			for seq := uint32(1); seq <= 3; seq++ {
				injectSeq(t, k, c, seq)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			for want := uint32(1); want <= 3; want++ {
				if seq, err := next(); err != nil || seq != want {
					t.Fatalf("receive %d after Flush = seq %d, %v; want seq %d", want, seq, err, want)
				}
			}
			if _, err := next(); !errors.Is(err, connector.ErrFlushed) {
				t.Fatalf("receive on the drained queue = %v, want ErrFlushed", err)
			}
			if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if _, err := next(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("receive after ErrFlushed = %v, want the deadline (it must block again)", err)
			}
		})
	}
}

// TestFlushKeepsDeadline: Flush wakes a blocked receive without changing
// the caller's read deadline, which applies again to the next receive.
func TestFlushKeepsDeadline(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	r := c.NewReader()
	defer r.Release()
	deadline := time.Now().Add(time.Second)
	if err := c.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, _, err := r.Next(); errc <- err }()
	if !k.WaitReceiving(c.PortID(), fakeWait) {
		t.Fatal("Next never blocked")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, connector.ErrFlushed) {
		t.Fatalf("Next = %v, want ErrFlushed", err)
	}
	go func() { _, _, err := r.Next(); errc <- err }()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Next after ErrFlushed = %v, want the caller's deadline", err)
		}
		if time.Now().Before(deadline) {
			t.Errorf("deadline error %v before the deadline", time.Until(deadline))
		}
	case <-time.After(fakeWait):
		t.Fatal("the caller's deadline was lost: Next still blocks")
	}
}

// TestFlushWakesEveryReader: several Readers blocked on one Conn all return
// ErrFlushed.
func TestFlushWakesEveryReader(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	const n = 4
	errc := make(chan error, n)
	for range n {
		r := c.NewReader()
		t.Cleanup(r.Release)
		go func() { _, _, err := r.Next(); errc <- err }()
	}
	// WaitReceiving sees one waiter at least; wait until all are.
	deadline := time.Now().Add(fakeWait)
	for k.Waiting(c.PortID()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Readers blocked", k.Waiting(c.PortID()), n)
		}
		k.WaitReceiving(c.PortID(), time.Millisecond)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for range n {
		awaitErr(t, errc, fakeWait, connector.ErrFlushed, "Next woken by Flush")
	}
}

// TestFlushUnderLoad: Flush called again and again while messages flow
// loses, duplicates and reorders nothing, and never shows as a deadline.
func TestFlushUnderLoad(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 1 << 14})
	c := dialFake(t, k, nil)
	r := c.NewReader()
	defer r.Release()
	const n = 5000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for seq := uint32(1); seq <= n; seq++ {
			if err := k.InjectRaw(c.PortID(), connector.Sender{}, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: seq})); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.Flush(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(10 * time.Microsecond)
		}
	}()
	flushed := 0
	for want := uint32(1); want <= n; {
		m, _, err := r.Next()
		switch {
		case errors.Is(err, connector.ErrFlushed):
			flushed++
		case err != nil:
			t.Fatalf("Next at seq %d: %v", want, err)
		case m.Seq != want:
			t.Fatalf("got seq %d, want %d", m.Seq, want)
		default:
			want++
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d messages, %d ErrFlushed", n, flushed)
}

func TestFlushAfterClose(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	_ = c.Close()
	if err := c.Flush(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
}

// TestFlushRacesBlockingReaders calls Flush round after round while
// Readers go back into blocking receives, with and without a deadline of
// the caller's (flushRaces).
func TestFlushRacesBlockingReaders(t *testing.T) {
	for _, withDeadline := range []bool{false, true} {
		t.Run(fmt.Sprintf("deadline=%v", withDeadline), func(t *testing.T) {
			k := cntest.New(nil)
			c := dialFake(t, k, nil)
			if withDeadline {
				if err := c.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			flushRaces(t, c, 300)
		})
	}
}

// flushRaces runs rounds of one Flush against four Readers of c that go
// back into a blocking receive as soon as they return: in every round
// every Reader returns ErrFlushed once (no wake-up is missed, however a
// Reader's entry and the Flush interleave), a Flush never shows as a
// deadline, and afterwards the caller's deadline is in force again.
func flushRaces(t *testing.T, c *connector.Conn, rounds int) {
	t.Helper()
	const readers = 4
	res := make(chan error, readers)
	for range readers {
		r := c.NewReader()
		t.Cleanup(r.Release)
		go func() {
			// One receive per round: a Reader that looked at a stop flag
			// after its last result could end before the last round's
			// Flush and look like a missed wake-up.
			for range rounds {
				_, _, err := r.Next()
				if !errors.Is(err, connector.ErrFlushed) {
					err = fmt.Errorf("Next: %v, want ErrFlushed", err)
				} else {
					err = nil
				}
				res <- err
				if err != nil {
					return
				}
			}
		}()
	}
	for round := range rounds {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		for range readers {
			select {
			case err := <-res:
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			case <-time.After(fakeWait):
				t.Fatalf("round %d: a Reader was not woken by the Flush", round)
			}
		}
	}
	// The caller's deadline (or none) is back in force: a receive blocks
	// until it.
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	r := c.NewReader()
	defer r.Release()
	if _, _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Next after the Flushes: %v, want the deadline", err)
	}
}
