//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// source reads events from a Listener, coalesces wake-ups under load and
// tells procmon when to flush its output.
//
// While events come rarely, each is handled as soon as it arrives, so that
// procmon reads /proc for an exec at once. When they come often (more than
// busyWakes wake-ups within busySpan, that is over 800 a second), every
// wake-up costs a context switch for one event, and the source instead waits
// the coalescing window after a wake-up before it reads on: the events that
// arrive meanwhile are then fetched together (the Listener takes up to 64
// per system call). It does so only while no exec has come for execQuiet:
// an exec needs its /proc read at once, before the process can end, while
// forks, exits and threads need none. Events wait in the socket's receive
// buffer, so nothing is lost by waiting as long as the buffer holds a
// window's worth.
//
// Output is flushed (the flush callback) within flushDelay of being
// written: when dirty reports buffered output, the source sets a read
// deadline flushDelay ahead, and flushes when a read waits until it. So
// output is never held back for long, and costs one write per burst or per
// flushDelay rather than one per event.
//
// Read deadlines only bound waits: a deadline already in the past would not
// drain the socket (Go's poller fails the read before asking the socket, so
// queued events stay queued), which is why stop uses Flush.
//
// A source is used by one goroutine; stop may be called from any.
type source struct {
	l      *proc.Listener
	window time.Duration
	timer  *time.Timer
	flush  func()
	dirty  func() bool

	mu       sync.Mutex
	stopping bool
	stopAt   uint64 // CLOCK_MONOTONIC ns of the stop
	stopped  chan struct{}

	armed    bool   // a flush deadline is set
	graced   bool   // stopping: the queue was found empty once
	woke     bool   // the last event ended a wait: maybe coalesce
	lastExec uint64 // CLOCK_MONOTONIC ns of the last exec (or prompt) event
	// prompt, if set, names other events that need /proc read at once
	// (thread creations, when their names are shown).
	prompt func(*proc.Event) bool

	// procmon's own wait on the main socket (wait.go), when set.
	wait   *sockWait
	begun  bool      // the first drain, of what the subscription read ahead
	wokeAt time.Time // when the last wait found the socket readable

	// Doorbell mode (bell.go), when bell is set.
	bell   *doorbell
	bellEv proc.Event
	// pre, if set, is given each exec the doorbell brings, at once; it
	// reports whether it read what the exec needs, so that the main
	// socket can be read later. drained is called after each read of
	// the main socket to its end.
	pre         func(*proc.Event) bool
	drained     func()
	want        proc.Event // the exec that rang
	draining    bool       // reading the main socket's queue to the end
	found       bool       // the last drain found events
	rang        bool       // an exec rang since
	drainAt     time.Time  // when the last drain started
	yielded     time.Time  // when the goroutine last yielded (bell.go)
	wantPending bool
	wantSeen    bool
	retries     int
	flushed     time.Time // when the output was last written out
	wakes       [busyWakes]time.Time
	nwake       int
}

// Coalescing starts when busyWakes wake-ups happen within busySpan.
const (
	busyWakes = 8
	busySpan  = 10 * time.Millisecond
	execQuiet = 10 * time.Millisecond
	// wokeAfter: a read that took longer waited for the kernel (a
	// wake-up); a quicker one came from the batch already fetched.
	wokeAfter  = 50 * time.Microsecond
	flushDelay = 100 * time.Millisecond
)

func newSource(l *proc.Listener, window time.Duration, flush func(), dirty func() bool) *source {
	s := &source{l: l, window: window, flush: flush, dirty: dirty, stopped: make(chan struct{})}
	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	return s
}

// busy records a wake-up and reports whether wake-ups come often.
func (s *source) busy() bool {
	now := time.Now()
	i := s.nwake % busyWakes
	oldest := s.wakes[i]
	s.wakes[i] = now
	s.nwake++
	return s.nwake > busyWakes && now.Sub(oldest) < busySpan
}

// errStopped is returned by next after stop, once the events queued before
// it have been returned.
var errStopped = errors.New("stopped")

// stop makes next return what is still queued in the socket, without
// waiting for more, and then errStopped. It wakes a pending read with the
// library's Flush: the queue is read, not thrown away, so that every event
// that happened before the stop is shown. It may be called from any
// goroutine.
func (s *source) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopping {
		s.stopping = true
		s.stopAt = monoNow()
		close(s.stopped)
		_ = s.l.Flush()
		if s.bell != nil {
			s.bell.stop()
		}
		if s.wait != nil {
			s.wait.stop()
		}
	}
}

// stopTime returns the CLOCK_MONOTONIC time of the stop, or 0 before it.
func (s *source) stopTime() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopAt
}

// stopOn stops the source when ctx ends. Call the result to release ctx.
func (s *source) stopOn(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, s.stop)
}

// next fills ev with the next event.
func (s *source) next(ev *proc.Event) error {
	if s.bell != nil {
		return s.nextBell(ev)
	}
	if s.wait != nil {
		return s.nextWait(ev)
	}
	if s.woke {
		s.woke = false
		if s.window > 0 && s.busy() && monoNow()-s.lastExec > uint64(execQuiet) {
			s.timer.Reset(s.window)
			select {
			case <-s.timer.C:
			case <-s.stopped:
				s.timer.Stop()
			}
			// Read on: the next read fetches what queued up
			// meanwhile, many events per system call.
		}
	}
	for {
		if !s.armed && !s.graced && s.dirty() {
			_ = s.l.SetDeadline(time.Now().Add(flushDelay))
			s.armed = true
		}
		t0 := time.Now()
		err := s.l.Next(ev)
		switch {
		case err == nil:
			s.woke = time.Since(t0) > wokeAfter
			if ev.Kind == proc.KindExec || s.prompt != nil && s.prompt(ev) {
				s.lastExec = ev.Timestamp
			}
			return nil
		case errors.Is(err, connector.ErrFlushed):
			if s.stopTime() == 0 {
				continue
			}
			if s.graced {
				return errStopped
			}
			// The queue is empty. Events of the last moments before
			// the stop may still be on their way (the kernel sends an
			// exit after it has woken the parent): wait stopGrace for
			// them.
			s.graced, s.armed = true, false
			_ = s.l.SetDeadline(time.Now().Add(stopGrace))
			continue
		case errors.Is(err, os.ErrDeadlineExceeded) && s.graced:
			return errStopped
		case errors.Is(err, os.ErrDeadlineExceeded) && s.armed:
			s.armed = false
			s.flush()
			_ = s.l.SetDeadline(time.Time{})
			continue
		}
		return err
	}
}

// drain returns the next event of a drain of the main socket (startDrain)
// in ev, and true; false once the drain has ended, with errStopped when the
// source was stopped and the queue has been read to the end (after
// stopGrace), or with a receive error.
//
// A drain started for an exec the doorbell brought (want) reads the socket
// again, up to 3 times, until that exec came out of it. When it ends, the
// output is written out if the drain found nothing, or if it was last
// written flushDelay ago or more: not once per wake-up.
func (s *source) drain(ev *proc.Event) (bool, error) {
	for {
		err := s.l.Next(ev)
		switch {
		case err == nil:
			s.found = true
			if ev.Kind == proc.KindExec && ev.CPU == s.want.CPU && ev.Seq == s.want.Seq {
				s.wantSeen = true
			}
			return true, nil
		case errors.Is(err, connector.ErrFlushed):
			if s.wantPending && !s.wantSeen && s.retries < 3 {
				// The doorbell rang before the main socket got
				// the exec: read again.
				s.retries++
				_ = s.l.Flush()
				continue
			}
			s.draining = false
			if s.drained != nil {
				s.drained()
			}
			stopping := s.stopTime() != 0
			if !s.found || time.Since(s.flushed) >= flushDelay || stopping {
				s.flush()
				s.flushed = time.Now()
			}
			if !stopping {
				return false, nil
			}
			if s.graced {
				return false, errStopped
			}
			// Events of the last moments before the stop may still be
			// on their way.
			s.graced = true
			time.Sleep(stopGrace)
			s.startDrain(false)
		case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
			return false, err
		default:
			if s.stopTime() != 0 {
				return false, errStopped
			}
			return false, err
		}
	}
}

// startDrain reads the main socket's queue, without waiting, to the end.
func (s *source) startDrain(want bool) {
	s.wantPending, s.wantSeen, s.retries = want, false, 0
	s.draining, s.found, s.rang = true, false, false
	s.drainAt = time.Now()
	_ = s.l.Flush()
}
