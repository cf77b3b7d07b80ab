package connector

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnlink/connector/internal/transport"
)

// ErrFlushed is returned by a receive ([Conn.Receive], [Reader.Next]) that was
// woken by [Conn.Flush], or that began after it, once it has returned
// everything that was queued: the socket's queue is empty. Receives after it
// block again. It is not a failure: the Conn and the Reader stay usable.
var ErrFlushed = errors.New("flushed: Conn.Flush was called and every queued message has been returned")

// flushState coordinates Flush with the receives blocked on the Conn. Flush
// wakes them through the transport's read deadline, which it sets in the
// past while any of them waits; the caller's deadline is kept here and put
// back when the last woken receive has left the transport.
//
// A blocking receive takes no lock: it announces itself in waiting, then
// checks gen again; Flush advances gen, then reads waiting (both sequentially
// consistent atomics). So either the receive sees the new Flush and does
// not block, or Flush sees the receive waiting and wakes it (or both: then
// the deadline is set in the past for nobody, and the next receive that
// leaves the transport as the last one puts it back). A deadline error met
// while forced was set is Flush's, not the caller's, if the caller's
// deadline has not passed.
type flushState struct {
	gen     atomic.Uint64 // Flush calls so far
	waiting atomic.Int64  // receives blocked in the transport, or about to be
	// forced is set while the transport's read deadline is in the past,
	// set by Flush; it changes only under mu.
	forced atomic.Bool
	mu     sync.Mutex
	dl     time.Time // the read deadline set by the caller; under mu
}

// past is a read deadline that has passed: setting it wakes every receive
// blocked in the transport.
var past = time.Unix(1, 0)

// Flush wakes every receive blocked on the Conn (Receive, [Reader.Next]).
// Each of them, and each receive that starts before it has seen the queue
// empty, returns the messages still queued without blocking, then an error
// matching ErrFlushed once the socket's queue is empty; receives after that
// block again. A Flush with no receive waiting applies to the next one.
// Flush is the way to make a reader return promptly (to finish a batch of
// work, or to stop without closing the Conn), where a read deadline would be
// a signal with a race. It is safe to call from any goroutine. (Inside, the
// wake-up goes through the socket's read deadline; the caller's own
// deadline, set with [Conn.SetReadDeadline], is kept and applies again
// afterwards.)
//
// Each Reader sees each Flush once (a Reader made after a Flush does not
// see it); all calls to Receive on a Conn count as one reader.
func (c *Conn) Flush() error {
	if err := c.checkOpen("flush"); err != nil {
		return err
	}
	f := &c.flush
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen.Add(1)
	if f.waiting.Load() == 0 || f.forced.Load() {
		return nil
	}
	f.forced.Store(true)
	return opErr("flush", c.mapErr(c.t.SetReadDeadline(past), "flush"))
}

// SetDeadline sets the read and write deadlines (see [Conn.SetReadDeadline]
// and [Conn.SetWriteDeadline]).
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for receives, including a receive that
// is already blocked. A receive past its deadline fails with an error
// matching os.ErrDeadlineExceeded; the zero time removes the deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if err := c.checkOpen("set read deadline"); err != nil {
		return err
	}
	f := &c.flush
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dl = t
	if f.forced.Load() {
		// A Flush is waking receives: the deadline is applied when the
		// last of them has left.
		return nil
	}
	return opErr("set read deadline", c.mapErr(c.t.SetReadDeadline(t), "set read deadline"))
}

// fill receives into b: the one place where a receive waits. seen is the
// Flush count that the reader (a Reader, or Receive) has seen: while it lags,
// fill does not block, and when the queue is empty it catches up and returns
// ErrFlushed. Errors are the transport's own (mapped by recvErr).
//
// A blocking receive costs two atomic additions (waiting) and four loads
// (gen twice, forced twice) besides the transport's Recv; the mutex is
// taken only to put the caller's deadline back after a Flush and to tell a
// deadline error from a Flush's wake-up.
func (c *Conn) fill(b *transport.Batch, seen *atomic.Uint64) (int, error) {
	f := &c.flush
	for {
		g := f.gen.Load()
		if seen.Load() != g {
			n, err := c.t.Recv(b, false)
			if errors.Is(err, syscall.EAGAIN) {
				seen.Store(g)
				return 0, ErrFlushed
			}
			return n, err
		}
		f.waiting.Add(1)
		if f.gen.Load() != g {
			// A Flush came between the two loads: drain instead.
			c.leave()
			continue
		}

		// forced cannot go from true to false while this receive is
		// counted in waiting, except between a leaving receive's check
		// of waiting and its reset, after it has put the caller's
		// deadline back: so if a Flush's past deadline ends this Recv,
		// one of the two loads sees forced set.
		forced := f.forced.Load()
		n, err := c.t.Recv(b, true)
		forced = forced || f.forced.Load()

		c.leave()
		if forced && err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !f.deadlinePassed() {
			// Woken by a Flush, not by the caller's deadline: drain if
			// the Flush is news to this reader, else wait again.
			continue
		}
		return n, err
	}
}

// leave ends a blocking receive's wait. The last receive to leave after a
// Flush (or the first to find a Flush's past deadline with nobody waiting)
// puts the caller's deadline back.
func (c *Conn) leave() {
	f := &c.flush
	if f.waiting.Add(-1) != 0 || !f.forced.Load() {
		return
	}
	f.mu.Lock()
	if f.waiting.Load() == 0 && f.forced.Load() {
		// An error here means the Conn is closing: every later
		// receive fails anyway.
		_ = c.t.SetReadDeadline(f.dl)
		f.forced.Store(false)
	}
	f.mu.Unlock()
}

// deadlinePassed reports whether the caller's read deadline has passed.
func (f *flushState) deadlinePassed() bool {
	f.mu.Lock()
	dl := f.dl
	f.mu.Unlock()
	return !dl.IsZero() && !time.Now().Before(dl)
}
