//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/cnlink/connector/proc"
)

// Process events can be switched off for the whole machine: the kernel
// builds them only while its global listener count is at least 1, and from
// Linux 6.6 any process may lower that count with unsubscribe requests (see
// the proc package's "Loss no socket sees"). No listener then sees a gap
// or a drop: procmon would show nothing, and say "0 lost". So it asks the
// kernel every -check-events whether events are on (proc.CheckEvents), and
// when they are not, says so on stderr and turns them back on
// (Listener.Rearm). What happened between the switch-off and the check is
// lost without a trace; the closing line counts the switch-offs found.

// checkTimeout bounds one check, and rearmTimeout one Rearm.
const (
	checkTimeout = 2 * time.Second
	rearmTimeout = 10 * time.Second
)

// eventsWatch checks every period that the kernel builds process events.
type eventsWatch struct {
	every time.Duration
	offs  atomic.Uint64 // switch-offs found
	done  chan struct{}
}

// watchEvents starts checking, until ctx ends; wait for the result's done
// before closing l.
func watchEvents(ctx context.Context, l *proc.Listener, every time.Duration, stderr io.Writer) *eventsWatch {
	w := &eventsWatch{every: every, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			w.check(ctx, l, stderr)
		}
	}()
	return w
}

// check is one check, and a Rearm when events are off.
func (w *eventsWatch) check(ctx context.Context, l *proc.Listener, stderr io.Writer) {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	err := proc.CheckEvents(cctx, nil)
	cancel()
	switch {
	case err == nil, ctx.Err() != nil:
		return
	case !errors.Is(err, proc.ErrEventsOff):
		fmt.Fprintf(stderr, "procmon: warning: checking that the kernel sends process events: %v\n", err)
		return
	}
	w.offs.Add(1)
	fmt.Fprintf(stderr, "procmon: warning: the kernel had stopped making process events for the whole machine (a process lowered its listener count below 1, which Linux 6.6 and later let any user do): the events since the last check (%v ago at most) are lost and cannot be counted; turning them back on\n", w.every)
	rctx, cancel := context.WithTimeout(ctx, rearmTimeout)
	err = l.Rearm(rctx, nil)
	cancel()
	switch {
	case err == nil:
		fmt.Fprintln(stderr, "procmon: process events are on again")
	case ctx.Err() == nil:
		fmt.Fprintf(stderr, "procmon: warning: turning process events back on: %v\n", err)
	}
}

// wait waits for the checks to end (after ctx).
func (w *eventsWatch) wait() {
	if w != nil {
		<-w.done
	}
}

// switchOffs returns the switch-offs found.
func (w *eventsWatch) switchOffs() uint64 {
	if w == nil {
		return 0
	}
	return w.offs.Load()
}
