//go:build linux

package transport

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr from include/linux/socket.h (recvmmsg, Linux
// 2.6.33): a msghdr and the received length. Like C, Go rounds the struct's
// size up to its alignment (the pointer size), which gives the kernel's 64
// bytes on 64-bit and 32 bytes on 32-bit systems. It must not end in a
// zero-size field: Go pads such a field, which made the struct 36 bytes on
// 32-bit systems. layout_linux_test.go checks it against the C layout.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// Compile-time checks, on every GOARCH that builds the package: struct
// user_msghdr is seven pointer-sized slots (pointers, size_t, and ints
// padded to the pointer's alignment) and struct mmsghdr one more. A
// mismatch makes one of these array lengths negative.
const ptrSize = unsafe.Sizeof(uintptr(0))

var (
	_ [unsafe.Sizeof(mmsghdr{}) - 8*ptrSize]byte
	_ [8*ptrSize - unsafe.Sizeof(mmsghdr{})]byte
	_ [unsafe.Offsetof(mmsghdr{}.Len) - 7*ptrSize]byte
	_ [7*ptrSize - unsafe.Offsetof(mmsghdr{}.Len)]byte
)

// Mmsg is the socket transport's per-batch state: recvmmsg headers, one
// iovec and one source address per buffer, and the calls prebuilt for
// syscall.RawConn, so that a receive allocates nothing.
type Mmsg struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrNetlink
	// Read is for syscall.RawConn.Read: it returns false (wait) while
	// nothing is queued. Try is for syscall.RawConn.Control: it sets
	// EAGAIN instead.
	Read func(fd uintptr) bool
	Try  func(fd uintptr)
	// N and Err are the result of the last call: datagrams received, or
	// the errno.
	N   int
	Err syscall.Errno
	// dirty is how many headers, from the first, the kernel may have
	// written since they were last reset.
	dirty int
	// full reports that the last call filled every header.
	full bool
}

// Prepare points the headers at b's buffers, once: it does nothing when
// they already do.
func (m *Mmsg) Prepare(b *Batch) {
	n := len(b.Bufs)
	if len(m.hdrs) == n && m.Read != nil {
		m.N, m.Err = 0, 0
		return
	}
	m.hdrs = make([]mmsghdr, n)
	m.iovs = make([]unix.Iovec, n)
	m.names = make([]unix.RawSockaddrNetlink, n)
	for i := range m.hdrs {
		m.iovs[i].Base = unsafe.SliceData(b.Bufs[i])
		m.iovs[i].SetLen(len(b.Bufs[i]))
		h := &m.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
	}
	m.dirty = n
	m.Read = m.recv
	m.Try = func(fd uintptr) {
		if !m.recv(fd) {
			m.Err = unix.EAGAIN
		}
	}
	m.N, m.Err = 0, 0
}

// recv is one recvmmsg call that never blocks. It returns false when
// nothing is queued (EAGAIN), so that RawConn.Read waits for the socket.
//
// It is a raw system call (unix.RawSyscall6: no entersyscall/exitsyscall),
// which is safe because MSG_DONTWAIT never waits: the goroutine keeps its
// processor for the time the kernel takes to copy out what is queued, at
// most a batch (about 50 µs for 64 process events; with larger datagrams
// and batches, at most what the receive buffer holds), as it would
// computing.
// Telling the scheduler costs more than that in a drain: a goroutine in a
// system call lets sysmon take its processor as soon as any other
// goroutine is runnable, which sends sysmon back to waking every 20 µs for
// a millisecond, on the receiving thread's CPU (benchmarks/README.md,
// "Where the time goes").
func (m *Mmsg) recv(fd uintptr) bool {
	m.reset()
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		switch e {
		case 0:
			m.filled(int(n))
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			m.full = false
			return false
		default:
			m.Err, m.full = e, false
			return true
		}
	}
}

// RecvWait is one recvmmsg call on a blocking socket that waits in the
// kernel for the first datagram (MSG_WAITFORONE: the rest of the batch does
// not wait), for at most the socket's SO_RCVTIMEO. It returns false when
// that time passed (EAGAIN) or a signal came (EINTR), true when N or Err is
// set.
//
// When the last call filled the whole batch, the queue is likely not empty
// (a drain, a storm): it first receives without waiting (recv, a raw system
// call), and waits in the kernel, an ordinary system call, only if that
// found nothing. The wait itself is an ordinary system call unless raw is
// set (Config.RawWait): a raw wait holds the goroutine's processor for as
// long as it waits, which the caller must afford.
func (m *Mmsg) RecvWait(fd uintptr, raw bool) bool {
	if m.full && m.recv(fd) {
		return true
	}
	m.reset()
	var n uintptr
	var e syscall.Errno
	if raw {
		n, _, e = unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)),
			unix.MSG_WAITFORONE|unix.MSG_TRUNC, 0, 0)
	} else {
		n, _, e = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)),
			unix.MSG_WAITFORONE|unix.MSG_TRUNC, 0, 0)
	}
	switch e {
	case 0:
		m.filled(int(n))
		return true
	case unix.EAGAIN, unix.EINTR:
		m.full = false
		return false
	default:
		m.Err, m.full = e, false
		return true
	}
}

// reset prepares the headers for a call: the kernel writes the address
// length, flags and received length of each entry it fills, so only the
// entries the last call filled need it (all of them after a failed call),
// not the whole batch: a wake-up that brings one datagram costs one reset,
// not BatchSize.
func (m *Mmsg) reset() {
	for i := range m.hdrs[:m.dirty] {
		m.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
		m.hdrs[i].Hdr.Flags = 0
		m.hdrs[i].Len = 0
	}
	m.dirty = len(m.hdrs)
}

// filled records that the last call filled n entries (0 on failure: then
// every entry is reset before the next call, as the kernel may have
// written any of them).
func (m *Mmsg) filled(n int) {
	m.N = n
	m.full = n == len(m.hdrs)
	if n > 0 {
		m.dirty = n
	}
}

// Fill copies the sender and length of each received datagram into b.Meta.
func (m *Mmsg) Fill(b *Batch) {
	for i := 0; i < m.N; i++ {
		h := &m.hdrs[i]
		b.Meta[i] = Meta{
			N:      int(h.Len),
			Port:   m.names[i].Pid,
			Groups: m.names[i].Groups,
			Trunc:  h.Hdr.Flags&unix.MSG_TRUNC != 0,
		}
	}
}
