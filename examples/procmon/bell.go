//go:build linux

package main

import (
	"errors"
	"os"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// The doorbell: a second socket on which the kernel (Linux 6.6 and later,
// its per-socket filter) delivers exec events only. procmon then waits on it
// instead of on its main socket: an exec wakes it at once, so that it reads
// /proc before the process can end, while forks, exits and thread events,
// which need no /proc read, wait in the main socket's buffer and are read
// many at a time, in order, at the next exec or within bellBusy (bellIdle
// when the last read found nothing). Output is written out when a read finds
// nothing more, and at least every flushDelay. Each wake-up costs the same whatever it
// brings, so under a storm of forks or threads procmon wakes a few hundred
// times a second instead of once per event. The main socket still gets
// every event and counts losses; the doorbell's events are only signals.
const (
	bellBusy = 10 * time.Millisecond
	bellIdle = 100 * time.Millisecond
	// bellSlack makes a deadline a little longer than the library's
	// 10 ms wait slice (connector.Config.KernelWait), so that a wait
	// that an exec ends within the slice costs no change of the
	// socket's timeout.
	bellSlack = time.Millisecond
)

// bellOpener opens the doorbell; tests replace it to act as a kernel
// before 6.6 does on the host.
var bellOpener = openBell

// openBell opens the doorbell, or returns nil when the kernel cannot filter
// (before 6.6 it would deliver every event, which would defeat it). There it
// takes the subscription's acknowledgement timeout to find that out: call it
// before subscribing the main socket.
func openBell(o *options) *proc.Listener {
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		MessageBufferSize: proc.MessageBufferSize,
		Senders:           connector.SendersKernelOnly,
		KernelWait:        o.kernelWait,
	})
	if err != nil {
		return nil
	}
	b, err := proc.NewListener(c, &proc.Config{Kinds: proc.KindExec})
	if err != nil {
		c.Close()
		return nil
	}
	if b.Mode() != proc.ModeKernelFilter {
		b.Close()
		return nil
	}
	return b
}

// nextBell is next in doorbell mode.
func (s *source) nextBell(ev *proc.Event) error {
	for {
		if s.draining {
			err := s.l.Next(ev)
			switch {
			case err == nil:
				s.found = true
				if ev.Kind == proc.KindExec && ev.CPU == s.want.CPU && ev.Seq == s.want.Seq {
					s.wantSeen = true
				}
				return nil
			case errors.Is(err, connector.ErrFlushed):
				if s.wantPending && !s.wantSeen && s.retries < 3 {
					// The doorbell rang before the main socket got
					// the exec: read again.
					s.retries++
					_ = s.l.Flush()
					continue
				}
				s.draining = false
				// Write the output out when the events have
				// stopped coming, and at least every flushDelay
				// meanwhile: not once per wake-up.
				if !s.found || time.Since(s.flushed) >= flushDelay || s.stopTime() != 0 {
					s.flush()
					s.flushed = time.Now()
				}
				if s.stopTime() != 0 {
					if s.graced {
						return errStopped
					}
					// Events of the last moments before the stop
					// may still be on their way.
					s.graced = true
					time.Sleep(stopGrace)
					s.startDrain(false)
				}
				continue
			case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
				return err
			default:
				if s.stopTime() != 0 {
					return errStopped
				}
				return err
			}
		}
		if s.stopTime() != 0 {
			s.startDrain(false)
			continue
		}
		wait := bellIdle
		if s.found {
			wait = bellBusy
		}
		s.found = false
		_ = s.bell.SetDeadline(time.Now().Add(wait + bellSlack))
		err := s.bell.Next(&s.bellEv)
		switch {
		case err == nil && s.bellEv.Kind == proc.KindExec:
			s.want = s.bellEv
			s.startDrain(true)
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, connector.ErrFlushed):
			s.startDrain(false)
		case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
			s.startDrain(false)
		default:
			if s.stopTime() != 0 {
				s.startDrain(false)
				continue
			}
			return err
		}
	}
}

// startDrain reads the main socket's queue, without waiting, to the end.
func (s *source) startDrain(want bool) {
	s.wantPending, s.wantSeen, s.retries = want, false, 0
	s.draining = true
	_ = s.l.Flush()
}
