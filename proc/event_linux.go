//go:build linux

package proc

import (
	"sync/atomic"
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
// adds the current offset between the two clocks:
//
//	Time = Timestamp + (wall clock - CLOCK_MONOTONIC)
//
// The offset is measured with one clock_gettime call and reused for
// offsetRefresh (100 ms), so converting costs no system call per event.
// The result is exact to within the time between the two clock reads plus
// the drift the wall clock's adjustment can add within 100 ms (at most
// 50 µs), unless the wall clock was stepped between the event and the call
// (the result then shifts by the step) or the machine was suspended in
// between (CLOCK_MONOTONIC stops during suspend, so the result is later than
// the truth by the time spent suspended). It does not allocate, except
// when it measures the offset anew.
func (e *Event) Time() time.Time { return MonotonicTime(e.Timestamp) }

// offsetRefresh is how long a measured wall-minus-monotonic offset is used.
const offsetRefresh = 100 * time.Millisecond

// clockOffset is a measured difference between the wall clock and
// CLOCK_MONOTONIC, in nanoseconds, and when it was measured.
type clockOffset struct {
	at  time.Time // with Go's monotonic reading, for the age check
	off int64
}

var cachedOffset atomic.Pointer[clockOffset]

// MonotonicTime converts a CLOCK_MONOTONIC reading in nanoseconds, such as
// Event.Timestamp, to wall-clock time; see Event.Time. It is safe for
// concurrent use.
func MonotonicTime(ns uint64) time.Time {
	now := time.Now()
	o := cachedOffset.Load()
	if o == nil || now.Sub(o.at) >= offsetRefresh || now.Sub(o.at) < 0 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return time.Time{}
		}
		wall := time.Now()
		o = &clockOffset{at: wall, off: wall.UnixNano() - ts.Nano()}
		cachedOffset.Store(o)
	}
	return time.Unix(0, int64(ns)+o.off)
}
