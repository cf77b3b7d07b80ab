//go:build !linux

package proc

import (
	"syscall"
	"time"
)

// A WaitStatus is a Linux wait(2) status word. On Linux, Event.WaitStatus
// returns golang.org/x/sys/unix.WaitStatus instead; this type exists so
// that code decoding events compiles on other systems, and its methods
// decode the Linux encoding.
type WaitStatus uint32

// Exited reports whether the task exited normally.
func (w WaitStatus) Exited() bool { return w&0x7f == 0 }

// ExitStatus returns the exit status, or -1 if the task did not exit
// normally.
func (w WaitStatus) ExitStatus() int {
	if !w.Exited() {
		return -1
	}
	return int(w>>8) & 0xff
}

// Signaled reports whether a signal killed the task.
func (w WaitStatus) Signaled() bool { return w&0x7f != 0x7f && w&0x7f != 0 }

// Signal returns the signal that killed the task, or -1.
func (w WaitStatus) Signal() syscall.Signal {
	if !w.Signaled() {
		return -1
	}
	return syscall.Signal(w & 0x7f)
}

// CoreDump reports whether the task dumped core.
func (w WaitStatus) CoreDump() bool { return w.Signaled() && w&0x80 != 0 }

// WaitStatus returns ExitCode as a wait(2) status (Linux encoding).
func (e *Event) WaitStatus() WaitStatus { return WaitStatus(e.ExitCode) }

// Time converts Timestamp to wall-clock time. Process events exist only on
// Linux; elsewhere it returns the zero Time.
func (e *Event) Time() time.Time { return MonotonicTime(e.Timestamp) }

// MonotonicTime converts a Linux CLOCK_MONOTONIC reading to wall-clock time.
// It returns the zero Time on systems other than Linux.
func MonotonicTime(uint64) time.Time { return time.Time{} }
