//go:build linux

package proc

import (
	"time"

	"golang.org/x/sys/unix"
)

// WaitStatus returns ExitCode as a wait(2) status, whose methods tell how
// the task ended: Exited and ExitStatus for a normal exit, Signaled and
// Signal for death by a signal, CoreDump when a core file was written.
// It is meaningful for KindExit only.
func (e *Event) WaitStatus() unix.WaitStatus { return unix.WaitStatus(e.ExitCode) }

// Time converts Timestamp to wall-clock time. The kernel stamps events with
// CLOCK_MONOTONIC, which has no fixed relation to the wall clock, so Time
// measures how long ago the event happened on CLOCK_MONOTONIC and subtracts
// that from the current wall-clock time:
//
//	Time = time.Now() - (clock_gettime(CLOCK_MONOTONIC) - Timestamp)
//
// The result is exact to within the time between the two clock reads
// (nanoseconds) unless, between the event and the call, the wall clock was
// stepped (it then shifts by the step) or the machine was suspended
// (CLOCK_MONOTONIC stops during suspend, so the result is later than the
// truth by the time spent suspended). Call it soon after receiving the event
// for the best result. It does not allocate.
func (e *Event) Time() time.Time { return MonotonicTime(e.Timestamp) }

// MonotonicTime converts a CLOCK_MONOTONIC reading in nanoseconds, such as
// Event.Timestamp, to wall-clock time; see Event.Time.
func MonotonicTime(ns uint64) time.Time {
	var ts unix.Timespec
	wall := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}
	}
	ago := time.Duration(ts.Nano() - int64(ns))
	return wall.Add(-ago)
}
