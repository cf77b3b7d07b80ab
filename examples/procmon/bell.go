//go:build linux

package main

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

// The doorbell: a second socket on which the kernel (Linux 6.6 and later,
// its per-socket filter) delivers exec events only. procmon then waits on it
// instead of on its main socket: an exec wakes it at once, so that it reads
// /proc before the process can end, while forks, exits and thread events,
// which need no /proc read, wait in the main socket's buffer and are read
// many at a time, in order, within bellBusy of the last read (bellIdle when
// it found nothing). Each wake-up costs the same whatever it brings, so
// under a storm of forks or threads procmon wakes a few hundred times a
// second instead of once per event. The main socket still gets every event
// and counts losses; the doorbell's events are only signals.
//
// An exec that rings reads the process's /proc details at once (the
// monitor's preExec) and keeps them until its event comes out of the main
// socket with the others, so that a storm of execs costs one wake-up and the
// /proc reads per exec, and the main socket is still read in batches. (With
// -p, whether an exec is in a watched subtree depends on the forks queued
// before it: the main socket is then read at once.)
//
// Waiting: see doorbell.wait.
const (
	bellBusy = 10 * time.Millisecond
	bellIdle = 100 * time.Millisecond
	// yieldEvery: while it waits in poll(2), procmon lets the Go
	// scheduler run its other goroutines (signals, the stop) at least this
	// often; see doorbell.wait.
	yieldEvery = 5 * time.Millisecond
)

// doorbell is the exec-only socket and what waiting on it takes.
type doorbell struct {
	l  *proc.Listener
	rc syscall.RawConn // the socket's descriptor, for poll(2)
	// wake is an eventfd that stop writes to, to end a wait at once.
	wake   int
	fds    [2]unix.PollFd
	ts     unix.Timespec
	ready  bool
	pollFn func(fd uintptr)
}

// bellOpener opens the doorbell; tests replace it to act as a kernel
// before 6.6 does on the host.
var bellOpener = openBell

// openBell opens the doorbell, or returns nil when the kernel cannot filter
// (before 6.6 it would deliver every event, which would defeat it). There it
// takes the subscription's acknowledgement timeout to find that out: call it
// before subscribing the main socket.
func openBell(o *options) *doorbell {
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		MessageBufferSize: proc.MessageBufferSize,
		// One datagram (one event) per receive: after a receive, the
		// next exec is known to be in the socket, not in the batch.
		BatchSize:  1,
		Senders:    connector.SendersKernelOnly,
		KernelWait: o.kernelWait,
	})
	if err != nil {
		return nil
	}
	l, err := proc.NewListener(c, &proc.Config{Kinds: proc.KindExec})
	if err != nil {
		c.Close()
		return nil
	}
	if l.Mode() != proc.ModeKernelFilter {
		l.Close()
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		l.Close()
		return nil
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		l.Close()
		return nil
	}
	b := &doorbell{l: l, rc: rc, wake: wake}
	b.pollFn = b.poll
	return b
}

func (b *doorbell) Close() {
	b.l.Close()
	unix.Close(b.wake)
}

// ring ends a wait in progress, and every later one: for the stop.
func (b *doorbell) ring() {
	one := [8]byte{1}
	_, _ = unix.Write(b.wake, one[:])
}

// wait waits up to d for an exec on the doorbell, and reports whether one
// (or an error to read) is there. It waits in ppoll(2) made as a raw system
// call, which the Go scheduler does not see: in an ordinary (blocking)
// system call, the scheduler's monitor thread takes the goroutine's P away
// after 20µs, and getting one back at the wake-up wakes that thread in turn,
// which measured as the largest part of procmon's CPU time per exec
// (examples/README.md, "CPU per event"). A raw wait keeps the P, so the
// other goroutines run only when procmon yields: the caller does so at least
// every yieldEvery, and the runtime preempts it after 10ms otherwise (a
// signal, which ends the wait with EINTR).
func (b *doorbell) wait(d time.Duration) bool {
	b.ts = unix.NsecToTimespec(int64(d))
	b.ready = false
	if b.rc.Control(b.pollFn) != nil {
		return false
	}
	return b.ready
}

func (b *doorbell) poll(fd uintptr) {
	b.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	b.fds[1] = unix.PollFd{Fd: int32(b.wake), Events: unix.POLLIN}
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&b.fds[0])), 2,
		uintptr(unsafe.Pointer(&b.ts)), 0, 0, 0)
	b.ready = e == 0 && n > 0 && b.fds[0].Revents != 0 && b.fds[1].Revents == 0
}

// nextBell is next in doorbell mode.
func (s *source) nextBell(ev *proc.Event) error {
	b := s.bell
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
				if s.drained != nil {
					s.drained()
				}
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
		now := time.Now()
		wait := bellIdle
		if s.found || s.rang {
			// Events came: read the main socket bellBusy after the
			// last read.
			if wait = bellBusy - now.Sub(s.drainAt); wait <= 0 {
				s.startDrain(false)
				continue
			}
		}
		ready := b.wait(wait)
		if now.Sub(s.yielded) >= yieldEvery {
			runtime.Gosched()
			s.yielded = now
		}
		if !ready {
			s.startDrain(false)
			continue
		}
		// A datagram is queued: Flush makes the receive return it (or
		// ErrFlushed) without waiting.
		_ = b.l.Flush()
		err := b.l.Next(&s.bellEv)
		switch {
		case err == nil && s.bellEv.Kind == proc.KindExec:
			s.rang = true
			if s.pre != nil && s.pre(&s.bellEv) {
				continue
			}
			s.want = s.bellEv
			s.startDrain(true)
		case err == nil, errors.Is(err, connector.ErrFlushed), errors.Is(err, os.ErrDeadlineExceeded):
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
	s.draining, s.found, s.rang = true, false, false
	s.drainAt = time.Now()
	_ = s.l.Flush()
}
