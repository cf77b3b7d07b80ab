package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"github.com/cnlink/connector"
)

// CPUUnknown is the Event.CPU of a KindLost record whose CPU is not known (a
// receive buffer overrun), and of acknowledgements from old kernels (about
// 3.10), which set proc_event.cpu to -1.
const CPUUnknown = ^uint32(0)

// An Event is one decoded process event. It is a flat value: a Listener or
// Decode fills a caller-provided Event in place, so the receive path needs no
// allocation. Fields that the event's Kind does not use are zero.
//
// # Process ids
//
// The kernel's "pid" is a task (thread) id and its "tgid" (thread group id)
// is what user space calls the process id. PID and TGID always name the task
// the event is about; for KindFork that is the new child. PID == TGID for a
// process's main thread; IsThread reports PID != TGID. All ids are in the
// initial PID and user namespaces.
type Event struct {
	// Kind is the event type (proc_event.what). For a kind this package
	// does not know, Raw holds the payload.
	Kind Kind
	// CPU is the CPU that sent the event. Together with Seq it orders
	// events from one CPU; events from different CPUs are not ordered.
	CPU uint32
	// Timestamp is CLOCK_MONOTONIC in nanoseconds (ktime_get_ns) when the
	// kernel built the event. Time converts it to wall-clock time.
	Timestamp uint64
	// Seq is the cn_msg sequence number: a per-CPU counter, shared by all
	// listeners and all kinds, that wraps at 2^32.
	Seq uint32
	// Ack is the cn_msg ack field: for KindNone the request's ack + 1,
	// otherwise 0.
	Ack uint32

	// PID and TGID are the task (thread) id and thread group (process) id
	// the event is about. For KindFork they are the new child.
	PID, TGID int32
	// ParentPID and ParentTGID are the parent: for KindFork the new task's
	// real parent (for a new thread, the parent of its whole process, not
	// the thread that created it); for KindExit and KindCoredump the real
	// parent, on Linux 4.18 and later, or 0 when the task was already
	// reaped: every thread, children of a parent that ignores SIGCHLD, and
	// now and then a child whose parent waits for it. The kernel builds
	// the exit event after it has told the parent (kernel/exit.c, do_exit:
	// exit_notify, then proc_exit_connector, which reads the parent only
	// while pid_alive), so a parent that reaps the child in between
	// leaves the fields 0. Kernels that preempt kernel code (preempt=lazy
	// or full, Debian's default for 6.18 and 7.3) open that window: in the
	// kernel matrix 13 of 1000 exits of children reaped at once came
	// without a parent on 7.3, none of 1000 on 6.12 (preempt=voluntary).
	// Match a child's exit by its PID, not its parent.
	ParentPID, ParentTGID int32

	// RUID and EUID are the real and effective user ids (KindUID).
	RUID, EUID uint32
	// RGID and EGID are the real and effective group ids (KindGID).
	RGID, EGID uint32

	// TracerPID and TracerTGID are the tracer on KindPtrace: 0 when the
	// tracer detached.
	TracerPID, TracerTGID int32

	// Comm is the new task name (KindComm), NUL-padded; it may fill all 16
	// bytes without a NUL. CommString returns it as a string.
	Comm [16]byte

	// ExitCode is the raw wait(2) status word of an exiting task (KindExit):
	// exit(3) gives 0x300, death by SIGKILL gives 9. WaitStatus decodes it.
	ExitCode uint32
	// ExitSignal is the signal sent to the parent when the task exits
	// (KindExit): SIGCHLD (17) for a process, -1 for a thread. It is not
	// the signal that killed the task; see WaitStatus for that.
	ExitSignal int32

	// AckErr is the result of a subscription request (KindNone): 0 for
	// success, otherwise a positive errno.
	AckErr uint32

	// Lost is, for KindLost, how many events were lost, found at a gap in
	// CPU's sequence numbers. It is 0 when the count is not known: the
	// kernel reported a receive buffer overrun (ENOBUFS), and CPU is
	// CPUUnknown. In ModeAll and ModeUserFilter the counts then follow as
	// further KindLost records when the next event from an affected CPU
	// arrives; their sum is the kernel's own drop count for the socket
	// (see the package documentation on loss). Seq is then the first
	// sequence number of the gap and Timestamp that of the event that
	// revealed it. CPU CPUUnknown with a count is either the events the
	// subscription read past what it keeps for delivery (see Listen), or
	// the drops pending when a wait ended: events the socket's drop
	// counter shows lost that no gap has reported yet, because their CPU
	// has sent nothing since (see Listener.Next). Those are not counted
	// again when the gap shows.
	Lost uint32

	// Raw is the whole proc_event payload of an event whose Kind this
	// package does not know. It aliases the receive buffer and is valid
	// only until the next call that fills this Event; copy it to keep it.
	Raw []byte
}

// IsThread reports whether the event is about a thread other than its
// process's main thread (PID != TGID): for KindFork a new thread rather than
// a new process, for KindExit a thread's exit rather than the main thread's.
//
// The main thread's exit (PID == TGID) is the end of the process only when
// it is the last task of its thread group. A process ends when its thread
// group ends, and the main thread can exit first: when it calls
// pthread_exit (or the exit system call) while other threads live on, and
// when another thread calls execve, which ends the main thread and then
// carries on under the same TGID (a KindExec event follows). The process's
// end is then the exit of its last task.
func (e *Event) IsThread() bool { return e.PID != e.TGID }

// IsProcess reports whether the event is about a process's main thread
// (PID == TGID). See IsThread.
func (e *Event) IsProcess() bool { return e.PID == e.TGID }

// A WaitStatus is a Linux wait(2) status word, as in Event.ExitCode. Its
// methods decode it the same way on every system (the Linux encoding,
// include/uapi/linux/wait.h and the W* macros of glibc).
type WaitStatus uint32

// Exited reports whether the task exited normally (exit(2) or a return from
// main).
func (w WaitStatus) Exited() bool { return w&0x7f == 0 }

// ExitStatus returns the exit status (0 to 255), or -1 if the task did not
// exit normally.
func (w WaitStatus) ExitStatus() int {
	if !w.Exited() {
		return -1
	}
	return int(w>>8) & 0xff
}

// Signaled reports whether a signal killed the task.
func (w WaitStatus) Signaled() bool { return w&0x7f != 0x7f && w&0x7f != 0 }

// Signal returns the number of the signal that killed the task, or 0 if no
// signal did. (golang.org/x/sys/unix.WaitStatus.Signal returns -1 there;
// syscall.Signal cannot hold -1 on every system.)
func (w WaitStatus) Signal() syscall.Signal {
	if !w.Signaled() {
		return 0
	}
	return syscall.Signal(w & 0x7f)
}

// CoreDump reports whether the task was killed by a signal and dumped core.
func (w WaitStatus) CoreDump() bool { return w.Signaled() && w&0x80 != 0 }

// String describes the status as os.ProcessState.String does: "exit status
// 3", "signal: killed", "signal: segmentation fault (core dumped)". Signal
// names are those of syscall.Signal on this system (on Linux, this
// architecture's). A word that is neither (a stop or continue status,
// which exit events do not carry) prints as "wait status 0x...";
// NoWaitStatus as "no wait status (not an exit event)".
func (w WaitStatus) String() string {
	switch {
	case w == NoWaitStatus:
		return "no wait status (not an exit event)"
	case w.Exited():
		return "exit status " + strconv.Itoa(w.ExitStatus())
	case w.Signaled():
		s := "signal: " + w.Signal().String()
		if w.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("wait status %#x", uint32(w))
}

// WaitStatus returns ExitCode as a wait(2) status, whose methods tell how
// the task ended: [WaitStatus.Exited] and [WaitStatus.ExitStatus] for a
// normal exit, [WaitStatus.Signaled] and [WaitStatus.Signal] for death by a
// signal, [WaitStatus.CoreDump] when a core file was written. It is the
// same type on every system.
//
// Only an exit event (KindExit) has a wait status: for every other kind it
// returns NoWaitStatus, which is neither Exited nor Signaled, so that a
// fork or exec never reads as "exit status 0".
func (e *Event) WaitStatus() WaitStatus {
	if e.Kind != KindExit {
		return NoWaitStatus
	}
	return WaitStatus(e.ExitCode)
}

// NoWaitStatus is what [Event.WaitStatus] returns for an event that is not
// an exit: Exited and Signaled report false, ExitStatus -1, Signal 0, and
// String "no wait status (not an exit event)". No exit event carries it:
// the kernel's exit_code is at most 16 bits (include/uapi/linux/wait.h).
const NoWaitStatus WaitStatus = 0xffffffff

// CommString returns Comm up to its first NUL byte. It allocates; use Comm
// directly on a path that must not.
func (e *Event) CommString() string {
	c := e.Comm[:]
	if i := bytes.IndexByte(c, 0); i >= 0 {
		c = c[:i]
	}
	return string(c)
}

// String returns a one-line description of the event, for logs.
func (e *Event) String() string {
	b := make([]byte, 0, 96)
	b = append(b, e.Kind.String()...)
	b = append(b, " cpu="...)
	if e.CPU == CPUUnknown {
		b = append(b, '?')
	} else {
		b = strconv.AppendUint(b, uint64(e.CPU), 10)
	}
	b = append(b, " seq="...)
	b = strconv.AppendUint(b, uint64(e.Seq), 10)
	if ki := e.Kind.info(); ki != nil && ki.format != nil {
		b = ki.format(b, e)
	} else {
		b = fmt.Appendf(b, " raw=%x", e.Raw)
	}
	return string(b)
}

// A DecodeError describes a message that is not a valid process event. It
// matches connector.ErrMalformed with errors.Is.
type DecodeError struct {
	// Kind is the event kind, when the header could be read.
	Kind Kind
	// Len is the payload length that arrived; Need the length that Kind
	// needs.
	Len, Need int
	// Reason says what is wrong.
	Reason string
}

func (e *DecodeError) Error() string { return "proc: malformed process event: " + e.Reason }

// Is makes a *DecodeError match connector.ErrMalformed.
func (e *DecodeError) Is(target error) bool { return target == connector.ErrMalformed }

var errDecodeNil = errors.New("proc: decode: ev is nil: give Decode the *Event to fill")

// Decode decodes the process event in m into ev, overwriting all of ev. It
// does not allocate; ev.Raw aliases m.Data.
//
// It checks the payload length for each kind and reads only what that kind
// needs, so it accepts older, shorter layouts: the 32-byte proc_event of
// kernels before 3.2 (for every kind that existed then), and exit and
// coredump events without the parent fields added in Linux 4.18 (ParentPID
// and ParentTGID are then 0). Bytes after the fields a kind uses are
// ignored. An unknown kind is not an error: ev.Kind is set to the kernel's
// value and ev.Raw to the payload.
//
// It fails with a *DecodeError (matching connector.ErrMalformed) if m is not
// from the process events connector (id 1:1) or if the payload is too short
// for its kind. When the 16-byte header could be read, ev then still holds
// Kind, CPU, Timestamp and Seq. A nil ev is an error, not a panic.
func Decode(m connector.Message, ev *Event) error {
	if ev == nil {
		return errDecodeNil
	}
	*ev = Event{Seq: m.Seq, Ack: m.Ack}
	if m.ID != connector.IDProc {
		return &DecodeError{Len: len(m.Data), Reason: "message id " + m.ID.String() + " is not the process events connector (1:1)"}
	}
	d := m.Data
	if len(d) < headerLen {
		return &DecodeError{Len: len(d), Need: headerLen, Reason: strconv.Itoa(len(d)) + " bytes are too short for the 16-byte proc_event header"}
	}
	ev.Kind = Kind(u32(d, offWhat))
	ev.CPU = u32(d, offCPU)
	ev.Timestamp = binary.NativeEndian.Uint64(d[offTimestamp:])
	if ev.Kind == KindLost {
		// The package's own loss record must never be forged by a message:
		// a kernel that sends this value as a kind is newer than the
		// package.
		return &DecodeError{Kind: ev.Kind, Len: len(d),
			Reason: "event kind 0x00100000 is the value this package reserves for loss records (KindLost); this kernel uses it for something new: upgrade github.com/cnlink/connector"}
	}
	ki := ev.Kind.info()
	if ki == nil || ki.decode == nil {
		ev.Raw = d
		return nil
	}
	if len(d) < ki.need {
		return &DecodeError{Kind: ev.Kind, Len: len(d), Need: ki.need,
			Reason: ki.name + " event of " + strconv.Itoa(len(d)) + " bytes is shorter than the " + strconv.Itoa(ki.need) + " bytes it needs"}
	}
	ki.decode(d, ev)
	return nil
}
