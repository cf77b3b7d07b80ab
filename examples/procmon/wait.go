//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

// Waiting on the main socket when there is no doorbell (kernels before 6.6,
// -doorbell=false, -e clone): procmon then wakes up for every event, and a
// wake-up is most of what an event costs. A receive that blocks through the
// library (Listener.Next) blocks in an ordinary system call, and the Go
// scheduler's monitor thread takes the goroutine's P away from it after
// 20µs; getting one back at the wake-up wakes that thread in turn, which
// measured at over twice forkstat's CPU per event (examples/README.md, "CPU
// per event"). So procmon waits itself, as it does on the doorbell: in a raw
// ppoll(2) on the main socket, which keeps the P, and then reads what is
// queued through the Listener without waiting (Flush, then Next until
// ErrFlushed), many events per system call. While events are rare it waits
// in the Go poller instead (idleWait), so that an idle procmon sleeps.

// rawAfterWake: procmon waits in raw ppoll calls while the last wake-up was
// this recent, and in the Go poller otherwise. A raw wait that times out
// costs a wake-up of its own every bellSlice; the poller's wait costs more
// per event but nothing while nothing comes.
const rawAfterWake = 10 * time.Millisecond

// sockWait waits for the main socket to be readable, without reading it.
type sockWait struct {
	rc syscall.RawConn // the main socket
	// The last wait's outcome: ready (something to read, or an error to
	// receive, such as an overrun's ENOBUFS), or errno for a failed wait.
	ready bool
	errno syscall.Errno
	pfd   unix.PollFd
	ts    unix.Timespec
	pollF func(fd uintptr)
	// Idle waits: an epoll instance of procmon's own that watches the
	// socket, itself watched by the Go poller (see newIdlePoll).
	ep      *os.File
	epRC    syscall.RawConn
	readyF  func(fd uintptr) bool
	stopped atomic.Bool
}

// openWait prepares waits on the socket of rc, which must be off the Go
// poller (connector.Config.KernelWait).
func openWait(rc syscall.RawConn) (*sockWait, error) {
	w := &sockWait{rc: rc}
	w.pollF = w.poll
	w.readyF = w.check
	var err error
	if w.ep, w.epRC, err = newIdlePoll(rc); err != nil {
		return nil, fmt.Errorf("waiting on the socket: %w", err)
	}
	return w, nil
}

// newIdlePoll returns an epoll instance that watches the socket of rc for
// reading, as a non-blocking file in the Go poller: a read of it (through
// the returned RawConn) parks the goroutine until the socket is readable.
// The doorbell's idle waits use it too.
func newIdlePoll(rc syscall.RawConn) (*os.File, syscall.RawConn, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, os.NewSyscallError("epoll_create1", err)
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	}); err != nil || cerr != nil {
		unix.Close(ep)
		return nil, nil, errors.Join(err, os.NewSyscallError("epoll_ctl", cerr))
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, nil, err
	}
	// A non-blocking descriptor: os.NewFile puts it in the poller.
	f := os.NewFile(uintptr(ep), "procmon-epoll")
	frc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, frc, nil
}

// Close releases the idle waits' epoll instance; the socket is the
// Listener's.
func (w *sockWait) Close() { w.ep.Close() }

// stop ends an idle wait in progress, and makes later ones return at once.
// A raw wait ends within its timeout. It may be called from any goroutine.
func (w *sockWait) stop() {
	w.stopped.Store(true)
	_ = w.ep.SetReadDeadline(time.Unix(1, 0))
}

// wait waits up to d (bellSlice at most) for the socket to be readable, in
// a raw ppoll(2) that the Go scheduler does not see, so that the goroutine
// keeps its P (see doorbell.wait: the caller yields to the other
// goroutines itself). It reports whether the socket is readable, or the
// wait failed (errno).
func (w *sockWait) wait(d time.Duration) bool {
	w.ready, w.errno = false, 0
	w.ts = unix.NsecToTimespec(int64(max(d, 0)))
	if w.rc.Control(w.pollF) != nil {
		w.errno = unix.EBADF // closed
	}
	return w.ready || w.errno != 0
}

// poll is one raw ppoll of fd with the timeout w.ts. Any event counts as
// readable: POLLERR is a pending error (an overrun's ENOBUFS), which the
// Listener receives and reports.
func (w *sockWait) poll(fd uintptr) {
	w.pfd = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&w.pfd)), 1, uintptr(unsafe.Pointer(&w.ts)), 0, 0, 0)
	switch {
	case e == unix.EINTR:
		// A signal, such as the runtime's preemption: the caller waits
		// again.
	case e != 0:
		w.errno = e
	case n > 0 && w.pfd.Revents&unix.POLLNVAL != 0:
		w.errno = unix.EBADF
	case n > 0:
		w.ready = true
	}
}

// idleWait is wait for when events are rare: it waits up to d in the Go
// poller, so that the goroutine parks, its P is idle and the scheduler's
// monitor thread sleeps. It costs more per wake-up than wait.
func (w *sockWait) idleWait(d time.Duration) bool {
	w.ready, w.errno = false, 0
	if w.stopped.Load() {
		return false
	}
	_ = w.ep.SetReadDeadline(time.Now().Add(d))
	if w.stopped.Load() {
		return false
	}
	if err := w.epRC.Read(w.readyF); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		w.errno = unix.EBADF // closed
	}
	return w.ready || w.errno != 0
}

// check is idleWait's Read callback: a ppoll of the socket that does not
// wait.
func (w *sockWait) check(uintptr) bool {
	w.ts = unix.Timespec{}
	w.ready, w.errno = false, 0
	if w.rc.Control(w.pollF) != nil {
		w.errno = unix.EBADF
	}
	return w.ready || w.errno != 0
}

// rawSleep sleeps for d in a raw system call, keeping the P (a sleep in
// the Go runtime would park the goroutine, and the wake-up costs the
// scheduler's round trip).
func rawSleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	for {
		// The remainder is written back on EINTR (a signal).
		_, _, e := unix.RawSyscall6(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, 0,
			uintptr(unsafe.Pointer(&ts)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		if e != unix.EINTR {
			return
		}
	}
}

// nextWait is next with procmon's own wait on the main socket (sockWait):
// it waits until the socket is readable, and then reads what is queued,
// without waiting, to the end (drain). Events come out in the order the
// Listener returns them, as with next.
//
// Under a storm of events that need no /proc read (no exec for execQuiet),
// a wake-up waits the coalescing window before it reads, as next does, so
// that the events of the window are read together.
func (s *source) nextWait(ev *proc.Event) error {
	w := s.wait
	if !s.begun {
		// The subscription may have read events ahead, before its
		// acknowledgement: they are in the Listener, not the socket.
		s.begun = true
		s.startDrain(false)
	}
	for {
		if s.draining {
			ok, err := s.drain(ev)
			if ok && (ev.Kind == proc.KindExec || s.prompt != nil && s.prompt(ev)) {
				s.lastExec = ev.Timestamp
			}
			if ok || err != nil {
				return err
			}
		}
		if s.stopTime() != 0 {
			s.startDrain(false)
			continue
		}
		now := time.Now()
		d := bellIdle
		if s.dirty() {
			// Output is written out within flushDelay, and at most
			// every flushDelay while events keep coming.
			due := flushDelay - now.Sub(s.flushed)
			if due <= 0 {
				s.flush()
				s.flushed = now
			} else {
				d = due
			}
		}
		var ready bool
		if now.Sub(s.wokeAt) < rawAfterWake {
			if now.Sub(s.yielded) >= yieldEvery {
				runtime.Gosched()
				s.yielded = now
			}
			ready = w.wait(min(d, bellSlice))
		} else {
			ready = w.idleWait(d)
			s.yielded = time.Now() // it parked
		}
		if !ready {
			continue
		}
		if w.errno != 0 {
			if s.stopTime() != 0 {
				return errStopped
			}
			return fmt.Errorf("waiting for events: %w", w.errno)
		}
		s.wokeAt = time.Now()
		if s.window > 0 && s.busy() && monoNow()-s.lastExec > uint64(execQuiet) {
			// Read on after the window: what queued up meanwhile
			// is read together, many events per system call.
			rawSleep(s.window)
		}
		s.startDrain(false)
	}
}
