//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/cnlink/connector/proc"
)

// source reads events from a Listener, coalesces wake-ups under load and
// tells procmon when to flush its output.
//
// While events come rarely, each is handled as soon as it arrives, so that
// procmon reads /proc for an exec at once. When they come often (more than
// busyWakes wake-ups within busySpan, that is over 800 a second), every
// wake-up costs a context switch for one event, and the source instead waits
// up to the coalescing window after waking before it reads on: the events
// that arrive meanwhile are then fetched together (the Listener takes up to
// 64 per system call). Events wait in the socket's receive buffer, so
// nothing is lost by waiting as long as the buffer holds a window's worth.
//
// Output is flushed (the flush callback) within flushDelay of being
// written: when dirty reports buffered output, the source sets a read
// deadline flushDelay ahead, and flushes when a read waits until it. So
// output is never held back for long, and costs one write per burst or per
// flushDelay rather than one per event.
//
// Read deadlines only bound waits. A deadline already in the past does not
// drain the socket: Go's poller fails the read before asking the socket,
// so queued events stay queued. stop uses one only to interrupt a wait.
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
	stopped  chan struct{}

	armed bool // a flush deadline is set
	woke  bool // the last event ended a wait: maybe coalesce
	wakes [busyWakes]time.Time
	nwake int
}

// Coalescing starts when busyWakes wake-ups happen within busySpan.
const (
	busyWakes  = 8
	busySpan   = 10 * time.Millisecond
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

// errStopped is returned by next after stop.
var errStopped = errors.New("stopped")

// stop makes a pending or later next return errStopped. The deadline in
// the past interrupts a wait; it reads nothing (see drain for that).
func (s *source) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopping {
		s.stopping = true
		close(s.stopped)
		_ = s.l.SetDeadline(time.Unix(1, 0))
	}
}

// stopOn stops the source when ctx ends. Call the result to release ctx.
func (s *source) stopOn(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, s.stop)
}

func (s *source) setDeadline(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	_ = s.l.SetDeadline(t)
	return true
}

// next fills ev with the next event.
func (s *source) next(ev *proc.Event) error {
	if s.woke {
		s.woke = false
		if s.window > 0 && s.busy() {
			s.timer.Reset(s.window)
			select {
			case <-s.timer.C:
			case <-s.stopped:
				s.timer.Stop()
				return errStopped
			}
			// Read on: the next read fetches what queued up
			// meanwhile, many events per system call.
		}
	}
	for {
		if !s.armed && s.dirty() {
			if !s.setDeadline(time.Now().Add(flushDelay)) {
				return errStopped
			}
			s.armed = true
		}
		err := s.l.Next(ev)
		switch {
		case err == nil:
			s.woke = true
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if !s.armed {
				return errStopped // only stop sets a deadline then
			}
			s.armed = false
			s.flush()
			if !s.setDeadline(time.Time{}) {
				return errStopped
			}
			continue
		}
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if stopping {
			return errStopped
		}
		return err
	}
}
