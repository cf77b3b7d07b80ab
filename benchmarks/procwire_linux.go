//go:build linux

package main

import (
	"encoding/binary"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Kernel wire facts used by the contestants that parse proc events themselves.
// Layouts: include/uapi/linux/netlink.h (struct nlmsghdr, 16 bytes),
// include/uapi/linux/connector.h (struct cn_msg, 20 bytes, Linux 2.6.14) and
// include/uapi/linux/cn_proc.h (struct proc_event, Linux 2.6.15).
const (
	nlmsgHdrLen = 16
	cnMsgLen    = 20

	cnIdxProc = 1 // CN_IDX_PROC
	cnValProc = 1 // CN_VAL_PROC

	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN
	procCnMcastIgnore = 2 // PROC_CN_MCAST_IGNORE

	procEventFork = 0x00000001 // PROC_EVENT_FORK
	procEventExit = 0x80000000 // PROC_EVENT_EXIT

	// Offsets inside struct proc_event: what (u32) at 0, then cpu, the
	// timestamp, and the event_data union at 16.
	forkChildPid  = 24 // fork.child_pid
	forkChildTgid = 28 // fork.child_tgid
	exitPid       = 16 // exit.process_pid
	exitTgid      = 20 // exit.process_tgid
	procEventMin  = 32 // enough for every field read here
)

// A tally counts what a contestant receives. The receive loop is its only
// writer; storm is read by the control goroutine, hence atomic.
type tally struct {
	stormPid uint32
	events   uint64 // proc events decoded (any kind, any process)
	storm    atomic.Uint64
	expect   atomic.Uint64 // storm events to wait for; 0 = not yet known
	endNs    atomic.Int64  // CLOCK_MONOTONIC when storm reached expect
	// endEvents is events when storm reached expect, endCPUNs the process's
	// CPU time (user+system) then (receive loop only).
	endEvents uint64
	endCPUNs  int64
	// firstNs is when the first storm event was counted, firstEvents the
	// events counted before it (receive loop only).
	firstNs     int64
	firstEvents uint64
	enobufs     atomic.Uint64
	restarts    uint64
	other       atomic.Uint64 // messages that were not proc events (ACKs, foreign)
}

// procEvent counts one proc_event payload (cn_msg data). It checks the length
// before reading, as every contestant must.
func (t *tally) procEvent(d []byte) {
	if len(d) < procEventMin {
		t.other.Add(1)
		return
	}
	t.events++
	var pid, tgid uint32
	switch binary.NativeEndian.Uint32(d[0:4]) {
	case procEventFork:
		pid = binary.NativeEndian.Uint32(d[forkChildPid:])
		tgid = binary.NativeEndian.Uint32(d[forkChildTgid:])
	case procEventExit:
		pid = binary.NativeEndian.Uint32(d[exitPid:])
		tgid = binary.NativeEndian.Uint32(d[exitTgid:])
	default:
		return
	}
	if tgid == t.stormPid && pid != t.stormPid {
		t.stormEvent()
	}
}

// forkExit counts an event that a library has already decoded.
func (t *tally) forkExit(what, pid, tgid uint32) {
	t.events++
	if (what == procEventFork || what == procEventExit) && tgid == t.stormPid && pid != t.stormPid {
		t.stormEvent()
	}
}

func (t *tally) stormEvent() {
	n := t.storm.Add(1)
	if n == 1 {
		t.firstNs, t.firstEvents = monoNow(), t.events
	}
	if n == t.expect.Load() {
		t.endEvents = t.events
		t.endCPUNs = cpuNow()
		t.endNs.Store(monoNow())
	}
}

// cnMsg decodes a cn_msg at the start of b and returns its id and payload.
func cnMsg(b []byte) (idx, val uint32, data []byte, ok bool) {
	if len(b) < cnMsgLen {
		return 0, 0, nil, false
	}
	l := int(binary.NativeEndian.Uint16(b[16:18]))
	if cnMsgLen+l > len(b) {
		return 0, 0, nil, false
	}
	return binary.NativeEndian.Uint32(b[0:4]), binary.NativeEndian.Uint32(b[4:8]), b[cnMsgLen : cnMsgLen+l], true
}

// procMcastMsg returns a cn_msg for cn_proc carrying a 4-byte
// PROC_CN_MCAST_LISTEN or _IGNORE (the form every kernel accepts).
func procMcastMsg(op uint32, ack uint32) []byte {
	b := make([]byte, cnMsgLen+4)
	binary.NativeEndian.PutUint32(b[0:], cnIdxProc)
	binary.NativeEndian.PutUint32(b[4:], cnValProc)
	binary.NativeEndian.PutUint32(b[12:], ack)
	binary.NativeEndian.PutUint16(b[16:], 4)
	binary.NativeEndian.PutUint32(b[20:], op)
	return b
}

// nlmsg wraps payload in a netlink header (type NLMSG_DONE, flags 0).
func nlmsg(payload []byte, port uint32) []byte {
	b := make([]byte, nlmsgHdrLen+len(payload))
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(b[12:], port)
	copy(b[nlmsgHdrLen:], payload)
	return b
}

// cpuNow returns the process's CPU time so far, user and system.
func cpuNow() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
