//go:build linux

package connector_test

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

// TestIntegrationFlush runs Flush on real sockets: it wakes a receive
// blocked in the kernel's poller, receives then return what the socket
// queue holds without blocking, then ErrFlushed, then block again within the
// caller's deadline.
func TestIntegrationFlush(t *testing.T) {
	requirePrivileged(t)
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			rx := dial(t, nil) // unicast only: no other test's traffic arrives
			tx := dial(t, nil)
			src := tier.open(t, rx)
			id := testID()

			// A blocked receive wakes.
			errc := make(chan error, 1)
			go func() { _, _, err := src.next(); errc <- err }()
			if !testutil.WaitFor(waitTimeout, func() bool { return ioWaiters("TestIntegrationFlush") >= 1 }) {
				t.Fatal("the receive never blocked")
			}
			start := time.Now()
			if err := rx.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if !errors.Is(awaitErr(t, errc, promptly, connector.ErrFlushed, "blocked receive woken by Flush"), connector.ErrFlushed) {
				t.FailNow()
			}
			t.Logf("Flush woke the blocked receive in %v", time.Since(start))

			// Queued messages come first, without blocking, then
			// ErrFlushed, then receives block again.
			for seq := uint32(1); seq <= 3; seq++ {
				if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: seq}); err != nil {
					t.Fatal(err)
				}
			}
			if err := rx.Flush(); err != nil {
				t.Fatal(err)
			}
			for want := uint32(1); want <= 3; want++ {
				m, _, err := src.next()
				if err != nil || m.ID != id || m.Seq != want {
					t.Fatalf("receive after Flush = %v seq %d, %v; want seq %d", m.ID, m.Seq, err, want)
				}
			}
			if _, _, err := src.next(); !errors.Is(err, connector.ErrFlushed) {
				t.Fatalf("receive on the drained queue = %v, want ErrFlushed", err)
			}
			if err := rx.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := src.next(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("receive after ErrFlushed = %v, want the deadline: it must block again", err)
			}
		})
	}
}

// TestIntegrationFlushKeepsDeadline: the caller's read deadline survives
// the wake-up, and a Reader blocked again after ErrFlushed still gets
// messages.
func TestIntegrationFlushKeepsDeadline(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, nil)
	tx := dial(t, nil)
	r := rx.NewReader()
	defer r.Release()
	errc := make(chan error, 1)
	go func() { _, _, err := r.Next(); errc <- err }()
	if !testutil.WaitFor(waitTimeout, func() bool { return ioWaiters("TestIntegrationFlushKeepsDeadline") >= 1 }) {
		t.Fatal("Next never blocked")
	}
	if err := rx.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, connector.ErrFlushed) {
		t.Fatalf("Next = %v, want ErrFlushed", err)
	}
	id := testID()
	type result struct {
		seq uint32
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, _, err := r.Next()
		res <- result{m.Seq, err}
	}()
	if !testutil.WaitFor(waitTimeout, func() bool { return ioWaiters("TestIntegrationFlushKeepsDeadline") >= 1 }) {
		t.Fatal("Next after ErrFlushed did not block: the wake-up deadline stayed")
	}
	if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: 42}); err != nil {
		t.Fatal(err)
	}
	if got := <-res; got.err != nil || got.seq != 42 {
		t.Fatalf("Next = seq %d, %v; want seq 42", got.seq, got.err)
	}
}

// TestIntegrationFlushRaces runs flushRaces on real sockets, through the
// runtime poller and with Config.KernelWait (a wake-up there takes up to a
// 10 ms slice, hence fewer rounds), with dial's deadline of the caller's.
func TestIntegrationFlushRaces(t *testing.T) {
	for _, kw := range []bool{false, true} {
		t.Run(fmt.Sprintf("KernelWait=%v", kw), func(t *testing.T) {
			c := dial(t, &connector.Config{KernelWait: kw})
			// Not dial's 10 s: the rounds took up to 9.6 s under
			// GOARCH=386 on a busy machine, and a Flush met after the
			// deadline shows as the deadline. A missed wake-up still
			// fails within fakeWait of its round.
			if err := c.SetReadDeadline(time.Now().Add(2 * time.Minute)); err != nil {
				t.Fatal(err)
			}
			rounds := 300
			if kw {
				rounds = 50
			}
			flushRaces(t, c, rounds)
		})
	}
}
