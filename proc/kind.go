package proc

import (
	"strconv"
	"strings"
)

// A Kind is the type of a process event: the kernel's enum proc_cn_event
// value carried in proc_event.what (include/uapi/linux/cn_proc.h). The values
// are single bits, so a set of kinds, as used by Config.Kinds, is their
// bitwise OR.
type Kind uint32

// Event kinds. All values except KindLost are the kernel's own.
const (
	// KindNone (PROC_EVENT_NONE) is the kernel's acknowledgement of a
	// subscription request. A Listener consumes acknowledgements itself
	// and never delivers them; Decode reports them.
	KindNone Kind = 0x00000000
	// KindFork (PROC_EVENT_FORK, Linux 2.6.15): a new task, process or
	// thread. PID/TGID are the new task, ParentPID/ParentTGID its parent.
	KindFork Kind = 0x00000001
	// KindExec (PROC_EVENT_EXEC, 2.6.15): a successful execve.
	KindExec Kind = 0x00000002
	// KindUID (PROC_EVENT_UID, 2.6.15): real or effective user id changed.
	KindUID Kind = 0x00000004
	// KindGID (PROC_EVENT_GID, 2.6.15): real or effective group id changed.
	KindGID Kind = 0x00000040
	// KindSID (PROC_EVENT_SID, 2.6.32): setsid(2) made a new session.
	KindSID Kind = 0x00000080
	// KindPtrace (PROC_EVENT_PTRACE, about 3.2): a tracer attached
	// (TracerPID set) or detached (TracerPID 0).
	KindPtrace Kind = 0x00000100
	// KindComm (PROC_EVENT_COMM, about 3.2): the task's name changed
	// through prctl(PR_SET_NAME) or /proc/<pid>/comm. Exec does not send it.
	KindComm Kind = 0x00000200
	// KindNonzeroExit (PROC_EVENT_NONZERO_EXIT, Linux 6.6) is a filter bit
	// only: in Config.Kinds it selects exits whose ExitCode is not 0. The
	// kernel never sends it as an event kind; those exits arrive as KindExit.
	KindNonzeroExit Kind = 0x20000000
	// KindCoredump (PROC_EVENT_COREDUMP, about 3.10): the task received a
	// core-dumping signal. It comes before the task's KindExit, and it
	// comes even when no core file is written (RLIMIT_CORE 0).
	KindCoredump Kind = 0x40000000
	// KindExit (PROC_EVENT_EXIT, 2.6.15): a task exited. Threads send it
	// too; see Event.IsThread.
	KindExit Kind = 0x80000000

	// KindAll selects every kind (PROC_EVENT_ALL, Linux 6.6): the OR of all
	// of the above except KindNone. In Config.Kinds it means "no filter".
	KindAll Kind = KindFork | KindExec | KindUID | KindGID | KindSID | KindPtrace |
		KindComm | KindNonzeroExit | KindCoredump | KindExit

	// KindLost is not a kernel kind. A Listener delivers it in the event
	// stream when events were lost: Event.Lost says how many, and
	// Event.CPU on which CPU (see Event.Lost). Its value is a bit the
	// kernel does not use; it is always delivered, whatever the filter.
	// Should a kernel ever send this value as an event kind, Decode
	// refuses it with a *DecodeError rather than let it pass for a loss
	// record.
	KindLost Kind = 0x00100000
)

var kindNames = [...]struct {
	k    Kind
	name string
}{
	{KindFork, "fork"},
	{KindExec, "exec"},
	{KindUID, "uid"},
	{KindGID, "gid"},
	{KindSID, "sid"},
	{KindPtrace, "ptrace"},
	{KindComm, "comm"},
	{KindNonzeroExit, "nonzero-exit"},
	{KindCoredump, "coredump"},
	{KindExit, "exit"},
	{KindLost, "lost"},
}

// Known reports whether k is a single kind this package decodes: one of the
// kernel's event kinds (KindNone included) or KindLost. KindNonzeroExit is a
// filter bit and not a known event kind.
func (k Kind) Known() bool {
	switch k {
	case KindNone, KindFork, KindExec, KindUID, KindGID, KindSID, KindPtrace,
		KindComm, KindCoredump, KindExit, KindLost:
		return true
	}
	return false
}

// String returns the kind's name ("fork", "exit", ...). A set of several
// kinds is written as names joined by "|", KindAll as "all", and bits this
// package does not know as hexadecimal.
func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindAll:
		return "all"
	}
	for _, n := range kindNames {
		if k == n.k {
			return n.name
		}
	}
	var sb strings.Builder
	rest := k
	for _, n := range kindNames {
		if k&n.k != 0 {
			if sb.Len() > 0 {
				sb.WriteByte('|')
			}
			sb.WriteString(n.name)
			rest &^= n.k
		}
	}
	if rest != 0 {
		if sb.Len() > 0 {
			sb.WriteByte('|')
		}
		sb.WriteString("0x")
		sb.WriteString(strconv.FormatUint(uint64(rest), 16))
	}
	return sb.String()
}
