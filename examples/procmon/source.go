//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

// source reads events from a Listener and coalesces wake-ups.
//
// After it wakes up for an event that arrived while it was idle, it waits
// up to the coalescing window before reading on, so that the events arriving
// meanwhile are fetched together (the Listener takes up to 64 per system
// call) instead of costing a wake-up each. The first event after a quiet
// spell is handled at once; later ones wait at most the window. Events wait
// in the socket's receive buffer, so nothing is lost by waiting as long as
// the buffer holds a window's worth of events.
//
// When the queue is empty, before it blocks, it calls idle: procmon flushes
// its output then, so output is never held back while nothing happens, and
// costs one write per burst rather than one per event.
//
// A source is used by one goroutine; stop may be called from any.
type source struct {
	l      *proc.Listener
	window time.Duration
	timer  *time.Timer
	idle   func()

	mu       sync.Mutex
	stopping bool
	stopped  chan struct{}

	blocking bool // no deadline: Next waits for the next event
	woke     bool // the last event woke us up: drain before blocking again
}

func newSource(l *proc.Listener, window time.Duration, idle func()) *source {
	s := &source{l: l, window: window, idle: idle, blocking: true, stopped: make(chan struct{})}
	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	return s
}

// errStopped is returned by next after stop.
var errStopped = errors.New("stopped")

// stop makes a pending or later next return errStopped.
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
		if s.window > 0 {
			s.timer.Reset(s.window)
			select {
			case <-s.timer.C:
			case <-s.stopped:
				s.timer.Stop()
				return errStopped
			}
		}
		// Drain what queued up without blocking.
		if !s.setDeadline(time.Unix(1, 0)) {
			return errStopped
		}
		s.blocking = false
	}
	for {
		err := s.l.Next(ev)
		switch {
		case err == nil:
			if s.blocking {
				s.woke = true
			}
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if s.blocking {
				return errStopped // only stop sets a deadline then
			}
			if s.idle != nil {
				s.idle()
			}
			if !s.setDeadline(time.Time{}) {
				return errStopped
			}
			s.blocking = true // drained: wait for the next event
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

// wallClock converts event timestamps (CLOCK_MONOTONIC) to wall-clock time
// without a system call per event: it reads both clocks together once and
// again every second, and adds the event's offset from that reading.
type wallClock struct {
	mono  int64 // CLOCK_MONOTONIC ns at the reading
	wall  time.Time
	until int64 // refresh after this CLOCK_MONOTONIC time
}

func (c *wallClock) time(ts uint64) time.Time {
	if c.until == 0 || int64(ts) > c.until {
		var t unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &t) == nil {
			c.wall = time.Now()
			c.mono = t.Nano()
			c.until = c.mono + int64(time.Second)
		}
	}
	return c.wall.Add(time.Duration(int64(ts) - c.mono))
}
