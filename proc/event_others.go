//go:build !linux

package proc

import "time"

// Time converts Timestamp to wall-clock time. Process events exist only on
// Linux; elsewhere it returns the zero Time.
func (e *Event) Time() time.Time { return MonotonicTime(e.Timestamp) }

// MonotonicTime converts a Linux CLOCK_MONOTONIC reading to wall-clock time.
// It returns the zero Time on systems other than Linux.
func MonotonicTime(uint64) time.Time { return time.Time{} }
