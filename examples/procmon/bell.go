//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The doorbell: a second socket that gets exec events only: the kernel
// filters them (Linux 6.6 and later, its per-socket filter) or a BPF socket
// filter does (before, see openBell). procmon then waits on it
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
	// bellSlice is the doorbell socket's receive timeout (SO_RCVTIMEO):
	// a wait ends after it at the latest, to read the main socket or to
	// stop.
	bellSlice = 10 * time.Millisecond
	// yieldEvery: while it waits in the kernel, procmon lets the Go
	// scheduler run its other goroutines (signals, the stop) at least this
	// often; see doorbell.wait.
	yieldEvery = 5 * time.Millisecond
)

// doorbell is the exec-only socket and what waiting on it takes.
type doorbell struct {
	l  *proc.Listener
	rc syscall.RawConn // the socket's descriptor, received from directly
	// The last wait's datagram and its sender.
	buf    [proc.MessageBufferSize]byte
	n      int
	sa     unix.RawSockaddrNetlink
	salen  uint32
	errno  syscall.Errno
	parser connector.DatagramParser
	recvFn func(fd uintptr)
	// Idle waits (idleWait) go through the Go poller: an epoll instance
	// of procmon's own that watches the doorbell, itself watched by the
	// poller.
	ep      *os.File
	epRC    syscall.RawConn
	flags   int // for recv: 0 (wait) or MSG_DONTWAIT
	pollFn  func(fd uintptr) bool
	stopped atomic.Bool
}

// bellOpener opens the doorbell; tests replace it to act as a kernel
// before 6.6 does on the host.
var bellOpener = openBell

// openBell opens the doorbell, or returns nil when it cannot. From Linux
// 6.6 the kernel filters its events by kind (ModeKernelFilter). Before, it
// sends every event to every listener (ModeUserFilter), and the doorbell
// drops all but execs with a classic BPF socket filter (execFilter), which
// the kernel runs before it queues a datagram, so that the others neither
// fill the doorbell nor wake procmon. With o.bellFilter (-doorbell=bpf)
// the doorbell subscribes to every event and uses the socket filter on
// newer kernels too. Call it before subscribing the main socket.
func openBell(o *options) *doorbell {
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		MessageBufferSize: proc.MessageBufferSize,
		BatchSize:         1,
		Senders:           connector.SendersKernelOnly,
		// A blocking socket, off the Go poller, whatever -kernel-wait
		// says: procmon receives from it itself (doorbell.wait).
		KernelWait: true,
	})
	if err != nil {
		return nil
	}
	// ExactLoss asks the kernel for every event: the socket filter's
	// work, as before 6.6.
	l, err := proc.NewListener(c, &proc.Config{Kinds: proc.KindExec, ExactLoss: o.bellFilter})
	if err != nil {
		c.Close()
		return nil
	}
	if l.Mode() != proc.ModeKernelFilter {
		// Replaces the Listener's own filter (which keeps other
		// processes' acknowledgements out): this one keeps them out
		// too. Events queued before it are not execs but ring all the
		// same; nextBell then reads the main socket.
		if err := c.SetBPF(execFilter); err != nil {
			l.Close()
			return nil
		}
	}
	rc, err := c.SyscallConn()
	if err != nil {
		l.Close()
		return nil
	}
	var serr error
	tv := unix.NsecToTimeval(int64(bellSlice))
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}); err != nil || serr != nil {
		l.Close()
		return nil
	}
	b := &doorbell{l: l, rc: rc}
	b.recvFn = b.recv
	b.pollFn = b.poll
	if err := b.openIdle(); err != nil {
		l.Close()
		return nil
	}
	return b
}

// procEventExec is PROC_EVENT_EXEC, the what of an exec event
// (include/uapi/linux/cn_proc.h, enum proc_cn_event, Linux 2.6.15 and
// later).
const procEventExec = 0x00000002

// execFilter is the doorbell's classic BPF socket filter before Linux 6.6:
// it accepts a datagram whose cn_msg is the process events connector's
// (idx and val 1, CN_IDX_PROC and CN_VAL_PROC of
// include/uapi/linux/connector.h) and whose proc_event's what is
// PROC_EVENT_EXEC, and drops everything else. Offsets count from the
// netlink header (16 bytes): cn_msg's idx at 16, val at 20, its payload, the
// proc_event, at 36 with what first. BPF loads are big-endian and the
// fields are in host byte order, so each value is compared as the load
// reads it. A datagram too short for a load is dropped.
var execFilter = func() []bpf.RawInstruction {
	be := func(v uint32) uint32 { return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, v)) }
	p, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 16, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: be(connector.IDProc.Idx), SkipTrue: 5},
		bpf.LoadAbsolute{Off: 20, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: be(connector.IDProc.Val), SkipTrue: 3},
		bpf.LoadAbsolute{Off: 16 + connector.HeaderLen, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: be(procEventExec), SkipTrue: 1},
		bpf.RetConstant{Val: 0xFFFFFFFF},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic("procmon: the doorbell's socket filter: " + err.Error())
	}
	return p
}()

// openIdle makes the epoll instance for idle waits.
func (b *doorbell) openIdle() error {
	var err error
	b.ep, b.epRC, err = newIdlePoll(b.rc)
	return err
}

func (b *doorbell) Close() {
	b.l.Close()
	b.ep.Close()
}

// stop ends an idle wait in progress, and makes later ones return at once.
func (b *doorbell) stop() {
	b.stopped.Store(true)
	_ = b.ep.SetReadDeadline(time.Unix(1, 0))
}

// idleWait is wait for when procmon is idle: it waits up to d, in the Go
// poller, so that the goroutine parks, its P is idle and the scheduler's
// monitor thread sleeps; the raw wait of busy times would have the thread
// woken every 10 ms by the socket's timeout and by that monitor. It costs
// more per wake-up, which does not matter when they are rare.
func (b *doorbell) idleWait(d time.Duration) bool {
	b.n, b.errno = 0, 0
	if b.stopped.Load() {
		return false
	}
	_ = b.ep.SetReadDeadline(time.Now().Add(d))
	if b.stopped.Load() {
		return false
	}
	err := b.epRC.Read(b.pollFn)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		b.errno = unix.EBADF // closed
		return true
	}
	return b.n > 0 || b.errno != 0 && b.errno != unix.EAGAIN && b.errno != unix.EINTR
}

// poll is the Read callback of idleWait: a receive that does not wait,
// done when it got a datagram or an error.
func (b *doorbell) poll(uintptr) bool {
	b.n, b.errno = 0, 0
	b.flags = unix.MSG_DONTWAIT
	err := b.rc.Control(b.recvFn)
	b.flags = 0
	if err != nil {
		b.errno = unix.EBADF
		return true
	}
	return b.errno != unix.EAGAIN && b.errno != unix.EINTR
}

// wait waits for an exec on the doorbell, bellSlice at most, and reports
// whether a datagram (or a receive error) came; event decodes it.
//
// It receives in a raw system call, which the Go scheduler does not see: in
// an ordinary (blocking) system call, the scheduler's monitor thread takes
// the goroutine's P away after 20µs, and getting one back at the wake-up
// wakes that thread in turn, which measured as the largest part of
// procmon's CPU time per exec (examples/README.md, "CPU per event"). A raw
// wait keeps the P, so the other goroutines run only when procmon yields:
// the caller does so at least every yieldEvery, and the runtime preempts it
// after 10ms otherwise (a signal, which ends the wait with EINTR).
//
// The datagram is the doorbell's: procmon reads it itself, one system call
// per wake-up (a receive through the Listener would be a second one after a
// poll(2)). It is only a signal; the main socket's copy of the event is the
// one procmon shows, counted and checked by the library.
func (b *doorbell) wait() bool {
	b.n, b.errno = 0, 0
	if b.rc.Control(b.recvFn) != nil {
		b.errno = unix.EBADF // closed
		return true
	}
	return b.n > 0 || b.errno != 0 && b.errno != unix.EAGAIN && b.errno != unix.EINTR
}

func (b *doorbell) recv(fd uintptr) {
	b.salen = unix.SizeofSockaddrNetlink
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b.buf[0])), uintptr(len(b.buf)),
		uintptr(b.flags), uintptr(unsafe.Pointer(&b.sa)), uintptr(unsafe.Pointer(&b.salen)))
	if e != 0 {
		b.errno = e
		return
	}
	b.n = int(n)
}

// event decodes the exec of the last wait into ev. It reports false for
// anything else: a receive error (ENOBUFS: the doorbell overflowed), a
// datagram not from the kernel, or one that does not decode as an exec.
func (b *doorbell) event(ev *proc.Event) bool {
	if b.errno != 0 || !connector.SendersKernelOnly.Accepts(connector.SenderFromAddr(b.sa.Pid, b.sa.Groups)) {
		return false
	}
	b.parser.Reset(b.buf[:b.n])
	m, ok, err := b.parser.Next()
	if !ok || err != nil {
		return false
	}
	if _, more, err := b.parser.Next(); more || err != nil {
		return false
	}
	return proc.Decode(m, ev) == nil && ev.Kind == proc.KindExec
}

// nextBell is next in doorbell mode.
func (s *source) nextBell(ev *proc.Event) error {
	b := s.bell
	for {
		if s.draining {
			if ok, err := s.drain(ev); ok || err != nil {
				return err
			}
		}
		if s.stopTime() != 0 {
			s.startDrain(false)
			continue
		}
		now := time.Now()
		var rang bool
		if s.found || s.rang {
			// Events came: read the main socket bellBusy after the
			// last read.
			if now.Sub(s.drainAt) >= bellBusy {
				s.startDrain(false)
				continue
			}
			rang = b.wait()
		} else {
			left := bellIdle - now.Sub(s.drainAt)
			if left <= 0 {
				s.startDrain(false)
				continue
			}
			rang = b.idleWait(left)
		}
		if now.Sub(s.yielded) >= yieldEvery {
			runtime.Gosched()
			s.yielded = now
		}
		if !rang {
			continue
		}
		if b.errno != 0 && b.errno != unix.ENOBUFS {
			// Anything but an overflow would come again at once.
			return fmt.Errorf("doorbell: receive: %w", b.errno)
		}
		if !b.event(&s.bellEv) {
			// An overflow, or a datagram that is not an exec: read
			// the main socket, which has (and counts) everything.
			s.startDrain(false)
			continue
		}
		s.rang = true
		if s.pre != nil && s.pre(&s.bellEv) {
			continue
		}
		s.want = s.bellEv
		s.startDrain(true)
	}
}
