//go:build linux

package proc

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func monoNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

func TestMonotonicTime(t *testing.T) {
	for i := 0; i < 3; i++ {
		before := time.Now()
		got := MonotonicTime(monoNow(t))
		after := time.Now()
		// The tolerance leaves room for slow clocks in emulated kernels
		// (the kernel matrix); a wrong sign or unit is off by far more.
		const tol = 10 * time.Millisecond
		if got.Before(before.Add(-tol)) || got.After(after.Add(tol)) {
			t.Fatalf("MonotonicTime(now) = %v, want between %v and %v", got, before, after)
		}
		// An event one second old converts to one second ago.
		old := MonotonicTime(monoNow(t) - uint64(time.Second))
		if d := time.Since(old); d < time.Second-tol || d > time.Second+tol {
			t.Fatalf("an event 1s old converts to %v ago", d)
		}
		cachedOffset.Store(nil) // measure anew on the next round
	}
}

func TestMonotonicTimeAllocs(t *testing.T) {
	ns := monoNow(t)
	MonotonicTime(ns)
	if n := testing.AllocsPerRun(1000, func() {
		cachedOffset.Load().at = time.Now() // keep the offset fresh: measure the steady state
		MonotonicTime(ns)
	}); n != 0 {
		t.Fatalf("MonotonicTime allocates %v times per call in steady state", n)
	}
}
