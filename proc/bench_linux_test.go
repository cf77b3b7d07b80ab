//go:build linux

package proc

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkIntegrationNext measures receiving real kernel events: a thread
// renames itself in a loop (a comm event each time) while the benchmark
// reads them through a Listener filtered to comm events.
func BenchmarkIntegrationNext(b *testing.B) {
	l := listen(b, &Config{Kinds: KindComm, AckTimeout: 300 * time.Millisecond})
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the renamed thread is retired at the end
		for !stop.Load() {
			if err := setThreadName("cnproc-bench"); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	defer func() {
		stop.Store(true)
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}()
	if err := l.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		b.Fatal(err)
	}
	var ev Event
	var lost uint64
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Next(&ev); err != nil {
			b.Fatal(err)
		}
		if ev.Kind == KindLost {
			lost++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(lost)/float64(b.N), "overruns/event")
}
