package proc

import "time"

// A Process is one live process as listed by Snapshot.
type Process struct {
	// PID is the process id, which is also its TGID (thread group id):
	// /proc lists processes, not threads.
	PID int32
	// TGID equals PID; it is here to match Event's naming.
	TGID int32
	// PPID is the parent's process id (0 for the initial process and
	// kernel threads' root).
	PPID int32
	// PGID and SID are the process group and session.
	PGID, SID int32
	// Comm is the process name (at most 15 bytes), as in KindComm events.
	Comm string
	// State is the one-letter scheduler state from /proc/<pid>/stat
	// ('R', 'S', 'Z', ...).
	State byte
	// RUID, EUID, RGID and EGID are the real and effective user and group
	// ids.
	RUID, EUID, RGID, EGID uint32
	// Threads is the number of threads.
	Threads int
	// StartTime is when the process started, as a duration since boot
	// on CLOCK_BOOTTIME. /proc/<pid>/stat gives it in clock ticks of
	// USER_HZ (100 per second), so it is a multiple of 10 ms. It tells a
	// process from an earlier one with the same reused PID. Note that
	// Event.Timestamp is CLOCK_MONOTONIC, which unlike CLOCK_BOOTTIME
	// stops while the machine is suspended.
	StartTime time.Duration
	// Err is set when the process's files could not be read or parsed
	// (for example other users' processes under hidepid=1); only PID and
	// TGID are then set. It matches os.ErrPermission where the kernel
	// refused access.
	Err error
}
