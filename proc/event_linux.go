//go:build linux

package proc

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Time converts Timestamp to wall-clock time. The kernel stamps events with
// CLOCK_MONOTONIC, which has no fixed relation to the wall clock, so Time
// adds the current offset between the two clocks:
//
//	Time = Timestamp + (wall clock - CLOCK_MONOTONIC)
//
// The offset is measured with a few clock reads and reused for 100 ms, so
// converting costs no system call per event. The result is exact to within the time between the clock reads plus
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
		off, ok := measureOffset()
		if !ok {
			return time.Time{}
		}
		o = &clockOffset{at: time.Now(), off: off}
		cachedOffset.Store(o)
	}
	return time.Unix(0, int64(ns)+o.off)
}

// measureOffset returns the wall clock minus CLOCK_MONOTONIC in nanoseconds.
// It brackets the monotonic read between two wall-clock reads, takes the
// midpoint, and keeps the tightest of three tries, so a preemption between
// the reads does not skew the result.
func measureOffset() (int64, bool) {
	best, bestGap := int64(0), int64(-1)
	for i := 0; i < 3; i++ {
		var ts unix.Timespec
		w1 := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return 0, false
		}
		w2 := time.Now()
		gap := w2.Sub(w1).Nanoseconds()
		if bestGap < 0 || gap < bestGap {
			mid := w1.UnixNano() + gap/2
			best, bestGap = mid-ts.Nano(), gap
		}
	}
	return best, true
}
