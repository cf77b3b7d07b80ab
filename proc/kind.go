package proc

import (
	"encoding/binary"
	"fmt"
	"math/bits"
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
	// KindUID (PROC_EVENT_UID, 2.6.15): one of the task's user ids
	// changed: real, effective, saved or filesystem (the kernel also sends
	// it for setfsuid and for setresuid that changes only the saved id).
	// RUID and EUID are the real and effective ids after the change.
	KindUID Kind = 0x00000004
	// KindGID (PROC_EVENT_GID, 2.6.15): one of the task's group ids
	// changed: real, effective, saved or filesystem, as for KindUID. RGID
	// and EGID are the real and effective ids after the change.
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
	// too; see [Event.IsThread].
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

// A kindInfo describes one event kind: adding a kind the kernel sends is one
// entry in kindTable. need is the payload length the kind's fields end at
// (the 16-byte header included); decode fills ev's kind-specific fields
// from d, which holds at least need bytes; format appends them for
// Event.String.
type kindInfo struct {
	kind   Kind
	name   string
	need   int
	decode func(d []byte, ev *Event)
	format func(b []byte, ev *Event) []byte
}

// The union event_data starts at offData; offsets below are within the
// payload (include/uapi/linux/cn_proc.h, struct proc_event).
var kindTable = [...]kindInfo{
	{KindNone, "none", offData + 4, func(d []byte, ev *Event) {
		ev.AckErr = u32(d, offData)
	}, func(b []byte, ev *Event) []byte {
		return fmt.Appendf(b, " ack=%d err=%d", ev.Ack, ev.AckErr)
	}},
	{KindFork, "fork", offData + 16, func(d []byte, ev *Event) {
		ev.ParentPID, ev.ParentTGID = i32(d, offData), i32(d, offData+4)
		ev.PID, ev.TGID = i32(d, offData+8), i32(d, offData+12)
	}, formatTaskParent},
	{KindExec, "exec", offData + 8, decodeTask, formatTask},
	{KindUID, "uid", offData + 16, func(d []byte, ev *Event) {
		decodeTask(d, ev)
		ev.RUID, ev.EUID = u32(d, offData+8), u32(d, offData+12)
	}, func(b []byte, ev *Event) []byte {
		return fmt.Appendf(formatTask(b, ev), " ruid=%d euid=%d", ev.RUID, ev.EUID)
	}},
	{KindGID, "gid", offData + 16, func(d []byte, ev *Event) {
		decodeTask(d, ev)
		ev.RGID, ev.EGID = u32(d, offData+8), u32(d, offData+12)
	}, func(b []byte, ev *Event) []byte {
		return fmt.Appendf(formatTask(b, ev), " rgid=%d egid=%d", ev.RGID, ev.EGID)
	}},
	{KindSID, "sid", offData + 8, decodeTask, formatTask},
	{KindPtrace, "ptrace", offData + 16, func(d []byte, ev *Event) {
		decodeTask(d, ev)
		ev.TracerPID, ev.TracerTGID = i32(d, offData+8), i32(d, offData+12)
	}, func(b []byte, ev *Event) []byte {
		return appendTask(formatTask(b, ev), "tracer", ev.TracerPID, ev.TracerTGID)
	}},
	{KindComm, "comm", offData + 8 + commLen, func(d []byte, ev *Event) {
		decodeTask(d, ev)
		copy(ev.Comm[:], d[offData+8:offData+8+commLen])
	}, func(b []byte, ev *Event) []byte {
		return strconv.AppendQuote(append(formatTask(b, ev), " comm="...), ev.CommString())
	}},
	// Coredump and exit carry the parent since Linux 4.18, inside the
	// same 40 bytes; older kernels left those bytes out or zero.
	{KindCoredump, "coredump", offData + 8, func(d []byte, ev *Event) {
		decodeTask(d, ev)
		if len(d) >= offData+16 {
			ev.ParentPID, ev.ParentTGID = i32(d, offData+8), i32(d, offData+12)
		}
	}, formatTaskParent},
	{KindExit, "exit", offData + 16, func(d []byte, ev *Event) {
		decodeTask(d, ev)
		ev.ExitCode, ev.ExitSignal = u32(d, offData+8), i32(d, offData+12)
		if len(d) >= offData+24 {
			ev.ParentPID, ev.ParentTGID = i32(d, offData+16), i32(d, offData+20)
		}
	}, func(b []byte, ev *Event) []byte {
		return fmt.Appendf(formatTaskParent(b, ev), " code=%#x signal=%d", ev.ExitCode, ev.ExitSignal)
	}},
	// Filter bits and the package's own record: names, no decoder.
	{KindNonzeroExit, "nonzero-exit", 0, nil, nil},
	{KindLost, "lost", 0, nil, func(b []byte, ev *Event) []byte {
		if ev.Lost == 0 {
			return append(b, " lost=unknown"...)
		}
		return strconv.AppendUint(append(b, " lost="...), uint64(ev.Lost), 10)
	}},
}

// kindByBit indexes kindTable by kind: 0 for KindNone, 1+bit for a one-bit
// kind; nil where the kind is unknown.
var kindByBit = func() (t [33]*kindInfo) {
	for i := range kindTable {
		t[kindIndex(kindTable[i].kind)] = &kindTable[i]
	}
	return t
}()

func kindIndex(k Kind) int {
	if k == 0 {
		return 0
	}
	if k&(k-1) != 0 {
		return -1
	}
	return 1 + bits.TrailingZeros32(uint32(k))
}

// info returns the table entry of a single kind, or nil.
func (k Kind) info() *kindInfo {
	if i := kindIndex(k); i >= 0 {
		return kindByBit[i]
	}
	return nil
}

func u32(d []byte, off int) uint32 { return binary.NativeEndian.Uint32(d[off:]) }
func i32(d []byte, off int) int32  { return int32(binary.NativeEndian.Uint32(d[off:])) }

// decodeTask reads process_pid and process_tgid, the first two fields of
// every union member but fork's.
func decodeTask(d []byte, ev *Event) { ev.PID, ev.TGID = i32(d, offData), i32(d, offData+4) }

func formatTask(b []byte, ev *Event) []byte { return appendTask(b, "pid", ev.PID, ev.TGID) }

func formatTaskParent(b []byte, ev *Event) []byte {
	return appendTask(formatTask(b, ev), "parent", ev.ParentPID, ev.ParentTGID)
}

func appendTask(b []byte, name string, pid, tgid int32) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=')
	b = strconv.AppendInt(b, int64(pid), 10)
	if pid != tgid {
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(tgid), 10)
	}
	return b
}

// Known reports whether k is a single kind this package decodes: one of the
// kernel's event kinds (KindNone included) or KindLost. KindNonzeroExit is a
// filter bit and not a known event kind.
func (k Kind) Known() bool {
	ki := k.info()
	return ki != nil && (ki.decode != nil || k == KindLost)
}

// String returns the kind's name ("fork", "exit", ...). A set of kinds
// this package knows, as Config.Kinds takes, is written as their names
// joined by "|", and KindAll as "all". A value with any bit this package
// does not know is written whole in hexadecimal, "Kind(0x400)", never split
// into names: an event carries one value in proc_event.what (see
// include/uapi/linux/cn_proc.h, enum proc_cn_event), so an unknown value
// there is a newer kernel's kind, or no kind at all, not a set.
func (k Kind) String() string {
	if k == KindAll {
		return "all"
	}
	if ki := k.info(); ki != nil {
		return ki.name
	}
	if k&^(KindAll|KindLost) != 0 {
		return "Kind(0x" + strconv.FormatUint(uint64(k), 16) + ")"
	}
	var sb strings.Builder
	for i := range kindTable {
		n := &kindTable[i]
		if n.kind != 0 && k&n.kind != 0 {
			if sb.Len() > 0 {
				sb.WriteByte('|')
			}
			sb.WriteString(n.name)
		}
	}
	return sb.String()
}
