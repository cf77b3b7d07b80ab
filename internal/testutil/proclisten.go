package testutil

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// A ProcListen says how a test subscribes one socket to process events and
// waits for the proc connector's acknowledgement (an event with what =
// PROC_EVENT_NONE and cn_msg.ack = the request's ack + 1, multicast on
// group 1: cn_proc_ack in drivers/connector/cn_proc.c). See [ProcListenAck].
type ProcListen struct {
	// Try sends one PROC_CN_MCAST_LISTEN carrying p.Ack and waits, until
	// ctx ends, for the acknowledgement of it or (where Try reads the
	// socket itself) of any LISTEN this wait sent ([ProcTry.Ours]). It
	// returns nil once acknowledged; sent tells whether the request went
	// out, so that an IGNORE is owed for it. A receive overrun may end Try
	// with an error matching [connector.ErrOverrun] or ENOBUFS, or show
	// only in Overruns.
	Try func(ctx context.Context, p ProcTry) (sent bool, err error)
	// Overruns returns how many receive overruns the socket has had so far
	// (for a Conn, its Stats().Overruns). Nil: Try's errors alone tell.
	Overruns func() uint64
	// Ignore sends one PROC_CN_MCAST_IGNORE. It is called when the test
	// ends, once per LISTEN sent, so that the kernel's listener count
	// (global before Linux 6.6) drops back.
	Ignore func() error
	// Wait bounds the wait for an acknowledgement while no overrun
	// happened; 0 means 10 s.
	Wait time.Duration
}

// A ProcTry is one LISTEN of a [ProcListen] wait.
type ProcTry struct {
	// Ack is the request's cn_msg.ack: random, non-zero, new per try.
	Ack uint32
	// Retry is set when an earlier try ended in a receive overrun: the
	// kernel drops everything sent to the socket, acknowledgements
	// included, until its receive queue has been read empty
	// (netlink_overrun, netlink_rcv_wake in net/netlink/af_netlink.c). A
	// Try that reads the socket itself reads it empty before sending.
	Retry bool
	// Ours reports whether an acknowledgement's cn_msg.ack answers one of
	// this wait's LISTENs, this try's or an earlier one's (an earlier ack
	// may still be queued behind the overrun report).
	Ours func(replyAck uint32) bool
}

// procListenBudget bounds a whole ProcListenAck wait once an overrun has
// happened, and procRetryWait each try after the first overrun: the kernel
// queues the acknowledgement in the sender's own sendmsg, so a try whose
// acknowledgement does not come within it was dropped.
const (
	procListenBudget = 20 * time.Second
	procRetryWait    = 2 * time.Second
)

// ProcListenAck subscribes a socket to process events through p and waits
// for the kernel's acknowledgement, surviving receive overruns: other
// traffic on group 1 (process monitors, other tests' events and acks) can
// overrun the socket's buffer, after which the kernel drops everything,
// the acknowledgement included, until the queue has been read empty. So
// after an overrun LISTEN is sent again under a new ack, every 2 s at most,
// for up to 20 s in all. Each LISTEN sent is undone by an IGNORE when the
// test ends. It fails the test when no acknowledgement comes.
func ProcListenAck(t testing.TB, p ProcListen) {
	t.Helper()
	wait := p.Wait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	var mu sync.Mutex
	var acks []uint32
	sent := 0
	t.Cleanup(func() {
		for range sent {
			if err := p.Ignore(); err != nil && !errors.Is(err, connector.ErrClosed) {
				t.Errorf("sending PROC_CN_MCAST_IGNORE: %v", err)
			}
		}
	})
	ours := func(replyAck uint32) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(acks, replyAck-1)
	}
	overruns := func() uint64 {
		if p.Overruns == nil {
			return 0
		}
		return p.Overruns()
	}
	budget := time.Now().Add(procListenBudget)
	seen := 0 // overruns seen
	for try := 1; ; try++ {
		ack := rand.Uint32N(1<<31) + 1
		mu.Lock()
		acks = append(acks, ack)
		mu.Unlock()
		d := wait
		if seen > 0 {
			d = min(procRetryWait, time.Until(budget))
		}
		before := overruns()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		// A new overrun ends the try at once: its acknowledgement may be lost.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
					if overruns() != before {
						cancel()
						return
					}
				}
			}
		}()
		wasSent, err := p.Try(ctx, ProcTry{Ack: ack, Retry: seen > 0, Ours: ours})
		close(stop)
		<-done
		cancel()
		if wasSent {
			sent++
		}
		if err == nil {
			if seen > 0 {
				t.Logf("LISTEN acknowledged after %d receive overruns (other traffic on group 1) and %d LISTENs", seen, try)
			}
			return
		}
		overrun := errors.Is(err, connector.ErrOverrun) || errors.Is(err, syscall.ENOBUFS) || overruns() != before
		waited := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
		if overrun {
			seen++
		}
		if !(overrun || seen > 0 && waited) || time.Now().After(budget) {
			t.Fatalf("waiting for the proc connector's acknowledgement of LISTEN (%d LISTENs sent, %d receive overruns): %v", try, seen, err)
		}
	}
}
